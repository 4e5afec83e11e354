"""[TP] text-prior study (science.md section 7): Full, None and the 14 fragments per item.

Per item the branches same_audio (Full), no_audio (None) and frag{N}_{k} (N = 2..5) are
scored in one compiled call; a branch is correct when its argmax candidate is the answer.
An item whose audio is too short to split is scored on Full and None only and flagged
`too_short` (science.md: its own category when it is audio-needed).

OUT/results.jsonl, one line per item, written as it goes (resumable):
  id, model (checkpoint directory name), task, benchmark, candidates, answer, too_short (bool),
  scores {branch: [C] raw candidate log-probs}, pred {branch: candidate},
  correct {branch: bool}, category (TS, FS, XS, AH, UN or too_short).
OUT/summary.json: accuracies, R_TP, R_N, the decomposition and XS / (FS + XS), overall
and per task, computed from results.jsonl.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jaxalm.audio import AudioTooShortError
from jaxalm.branches import FRAGMENT_NS, BranchError, Scorer, fragment_branches
from jaxalm.data import Item, read_items
from jaxalm.studies.common import (JsonlWriter, finite, load_model, modality_problem, progress, read_jsonl,
                                   score_batches, skipped_list, write_json)

FULL, NONE = "same_audio", "no_audio"
RESULTS, SUMMARY = "results.jsonl", "summary.json"
DECOMPOSITION_PNG, RETENTION_PNG = "decomposition.png", "retention.png"


def _too_short(e: BaseException) -> bool:
  while e is not None:
    if isinstance(e, AudioTooShortError):
      return True
    e = e.__cause__
  return False


def item_record(item: Item, scores: dict[str, np.ndarray], too_short: bool,
                ns: Sequence[int] = FRAGMENT_NS) -> dict:
  """The results line of a scored item (see the module docstring)."""
  from jaxalm import metrics
  y = item.candidates.index(item.answer)
  pred = {b: int(np.argmax(s)) for b, s in scores.items()}
  correct = {b: p == y for b, p in pred.items()}
  frags = {n: np.array([[correct.get(f"frag{n}_{k}", False) for k in range(1, n + 1)]]) for n in ns}
  category = metrics.tp_categories([correct[FULL]], [correct[NONE]], frags, [too_short])[0]
  rec = {"id": item.id, "task": item.task, "benchmark": item.benchmark, "candidates": list(item.candidates),
         "answer": item.answer, "too_short": too_short,
         "scores": {b: [float(x) for x in s] for b, s in scores.items()},
         "pred": {b: item.candidates[p] for b, p in pred.items()}, "correct": correct, "category": str(category)}
  return rec


def decompose(records: Sequence[dict], ns: Sequence[int] = FRAGMENT_NS) -> dict:
  """Accuracies (%), R_TP, R_N, category counts/shares and XS / (FS + XS) of results lines."""
  from jaxalm import metrics
  full = np.array([r["correct"][FULL] for r in records], bool)
  none = np.array([r["correct"][NONE] for r in records], bool)
  short = np.array([r["too_short"] for r in records], bool)
  frags = {n: np.array([[r["correct"].get(f"frag{n}_{k}", False) for k in range(1, n + 1)] for r in records],
                       bool).reshape(len(records), n) for n in ns}
  cats = metrics.tp_categories(full, none, frags, short)
  decomposition = metrics.tp_decomposition(cats)
  keep = ~short
  acc_frag = {f"frag{n}_{k}": finite(metrics.percent(frags[n][:, k - 1], keep)) for n in ns for k in range(1, n + 1)}
  return {
      "n_items": len(records), "n_too_short_audio": int(short.sum()),
      "accuracy": {"full": finite(metrics.percent(full)), "none": finite(metrics.percent(none)),
                   "full_splittable": finite(metrics.percent(full, keep)), "fragments": acc_frag},
      "R_TP": finite(metrics.text_prior_rate(full, none)),
      "R_N": {str(n): finite(v) for n, v in metrics.retention(full, frags, short).items()},
      "decomposition": {c: {"n": d["n"], "share": finite(d["share"])} for c, d in decomposition.items()},
      "XS_over_FS_XS": finite(metrics.cross_segment_share(cats)),
  }


def run_text_prior(model, data: str | Path, out: str | Path, *, format: str | None = None, batch_size: int = 4,
                   media_root: str | Path | None = None, load_media: Callable | None = None,
                   fragment_ns: Sequence[int] = FRAGMENT_NS, show_progress: bool = True) -> dict:
  """Runs the [TP] study and writes OUT/results.jsonl, OUT/summary.json and the plots.

  Resumable: items already in OUT/results.jsonl are not scored again.

  Args:
    model: a `jaxalm.Model` or a checkpoint directory.
    data: a benchmark file (any reader format; evidence is not used).
    out: output directory (created).
    format: reader format; inferred if None.
    batch_size: items per compiled call.
    media_root: passed to `read_items`.
    load_media: path -> media array (default: the family's `load_media`, else audio).
    fragment_ns: the fragment counts N.
  Returns:
    The summary (also written to OUT/summary.json).
  """
  from jaxalm import plots
  if isinstance(model, (str, os.PathLike)):
    model = load_model(model)
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  read = read_items(data, format, on_error="skip", media_root=media_root)
  skipped: list = list(read.skipped)
  items = []
  for it in read.items:
    if (problem := modality_problem(it, model)) is not None:
      skipped.append((it.id, problem))
    else:
      items.append(it)
  load_media = load_media or getattr(model.family, "load_media", None)
  full = Scorer(model, (FULL, NONE) + fragment_branches(fragment_ns), batch_size=batch_size, load_media=load_media)
  short = Scorer(model, (FULL, NONE), batch_size=batch_size, load_media=load_media)

  def plan(it):
    media = full.load_media(it.media) if it.media is not None else None
    try:
      return full.plan(it, media), False
    except BranchError as e:
      if not _too_short(e):
        raise
    return short.plan(it, media), True

  results_path = out / RESULTS
  name = Path(str(model.path)).name
  n_scored = 0
  with JsonlWriter(results_path) as writer:
    others = sorted({str(r.get("model")) for r in writer.records.values()} - {name})
    if others:
      raise ValueError(f"{results_path} holds results of model(s) {others}, not {name!r}; "
                       f"write to another output directory")
    todo = [it for it in items if it.id not in writer.records]
    bar = progress(len(todo), "text-prior", show_progress)
    try:
      n_skipped = len(skipped)
      for batch in score_batches(plan, todo, full, batch_size, skipped):
        for it, too_short, scores in batch:
          writer.write({**item_record(it, scores, too_short, fragment_ns), "model": name})
        n_scored += len(batch)
        bar.update(len(batch) + len(skipped) - n_skipped)
        n_skipped = len(skipped)
      bar.update(len(skipped) - n_skipped)
    finally:
      bar.close()

  records = read_jsonl(results_path)
  summary: dict[str, Any] = {
      "model": str(model.path), "data": str(data), "format": read.format, "fragment_ns": list(fragment_ns),
      "files": {"results": RESULTS, "summary": SUMMARY}, "n_rows_read": len(read.items) + len(read.skipped),
      "n_items_scored_this_run": n_scored, "skipped": skipped_list(skipped)}
  if records:
    summary.update(decompose(records, fragment_ns))
    tasks = sorted({r["task"] for r in records if r["task"] is not None})
    if len(tasks) > 1:
      summary["by_task"] = {t: decompose([r for r in records if r["task"] == t], fragment_ns) for t in tasks}
    d = summary["decomposition"]
    plots.decomposition_bar({c: v["share"] for c, v in d.items()}, out / DECOMPOSITION_PNG,
                            counts={c: v["n"] for c, v in d.items()})
    plots.retention_plot({int(n): v for n, v in summary["R_N"].items()}, out / RETENTION_PNG,
                         text_prior_rate=summary["R_TP"])
    summary["files"].update(decomposition=DECOMPOSITION_PNG, retention=RETENTION_PNG)
  else:
    summary["error"] = "no item could be scored"
  write_json(out / SUMMARY, summary)
  return summary
