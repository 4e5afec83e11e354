"""[ARB] arbitration study (science.md sections 3-5): score, write the score file as it goes, summarise.

Per item the branches joint J, faithful F, same_audio A and, where asked for, no_audio N
and perturbed P are scored in one compiled call. Each item gives up to two score-file
lines (`jaxalm.scorefile`):

  adversarial  joint = J, y_t = text_answer (needs adversarial evidence and a text_answer)
  faithful     joint = F, y_t = y_a         (needs faithful evidence)

Both lines carry the item's same_audio and no_audio scores; `perturbed` is the noised audio
with the line's own evidence (P for the adversarial line, the `perturbed_faithful` branch
for the faithful line), so ACD contrasts each line's joint branch with its own noised twin.

The summary is computed from the score file alone, with the functions behind
`jaxalm metrics`, so `jaxalm metrics OUT/scores.jsonl --method all --json` (and `--select`)
reproduces its numbers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jaxalm import branches as branches_mod
from jaxalm.branches import Scorer
from jaxalm.data import Item, read_items
from jaxalm.studies.common import (finite, load_model, modality_problem, model_modality, progress, score_batches,
                                   skipped_list, write_json)

PERTURBED_FAITHFUL = "perturbed_faithful"
# The faithful line's ACD reference: perturbed audio with the faithful evidence.
branches_mod.BRANCHES.setdefault(PERTURBED_FAITHFUL, ("perturbed", "faithful"))

CORE_BRANCHES = ("joint", "faithful", "same_audio")
OPTIONAL_BRANCHES = ("no_audio", "perturbed", "irrelevant")
DEFAULT_BRANCHES = ("joint", "faithful", "same_audio", "no_audio", "perturbed")
NAUC_BUDGETS = (5.0, 10.0)
SCORES, SUMMARY, MARGINS_PNG, FRONTIER_PNG = "scores.jsonl", "summary.json", "margins.png", "frontier.png"


def default_branches(model) -> tuple[str, ...]:
  """DEFAULT_BRANCHES, without `perturbed` for models whose media is not audio."""
  if model_modality(model) == "audio":
    return DEFAULT_BRANCHES
  return tuple(b for b in DEFAULT_BRANCHES if b != "perturbed")


def check_branches(names: Sequence[str]) -> tuple[str, ...]:
  """Validates a requested branch list (joint and same_audio are required)."""
  names = tuple(dict.fromkeys(names))
  unknown = [b for b in names if b not in CORE_BRANCHES + OPTIONAL_BRANCHES]
  if unknown:
    raise ValueError(f"unknown branch(es) {unknown}; choose from {CORE_BRANCHES + OPTIONAL_BRANCHES}")
  missing = [b for b in ("joint", "same_audio") if b not in names]
  if missing:
    raise ValueError(f"the arbitration study needs branch(es) {missing}")
  return names


def conditions(item: Item, requested: Sequence[str]) -> list[tuple[str, str, str]]:
  """The score-file lines an item gives: [(condition, joint branch, y_t)]."""
  out = []
  if "joint" in requested and "adversarial" in item.evidence and item.text_answer is not None:
    out.append(("adversarial", "joint", item.text_answer))
  if "faithful" in requested and "faithful" in item.evidence:
    out.append(("faithful", "faithful", item.answer))
  return out


def item_branches(item: Item, requested: Sequence[str]) -> tuple[str, ...]:
  """The branches to score for an item's lines."""
  conds = {c for c, _, _ in conditions(item, requested)}
  out = []
  if "adversarial" in conds:
    out.append("joint")
  if "faithful" in conds:
    out.append("faithful")
  out.append("same_audio")
  if "no_audio" in requested:
    out.append("no_audio")
  if "perturbed" in requested:
    if "adversarial" in conds:
      out.append("perturbed")
    if "faithful" in conds:
      out.append(PERTURBED_FAITHFUL)
  if "irrelevant" in requested and "irrelevant" in item.evidence:
    out.append("irrelevant")
  return tuple(out)


def split_by_id(items: Sequence[Item], seed: int = 0, dev_fraction: float = 0.5) -> dict[str, str]:
  """id -> split: the item's `split` where set, else a seeded dev/test split of the remaining ids.

  The unassigned ids are sorted, permuted with `numpy.random.default_rng(seed)`, and the
  first round(dev_fraction * n) become "dev", the rest "test".
  """
  out = {it.id: it.split for it in items if it.split is not None}
  rest = sorted(it.id for it in items if it.split is None)
  order = np.random.default_rng(seed).permutation(len(rest))
  n_dev = int(np.floor(dev_fraction * len(rest) + 0.5))
  for rank, k in enumerate(order):
    out[rest[k]] = "dev" if rank < n_dev else "test"
  return out


def score_lines(item: Item, scores: dict[str, np.ndarray], requested: Sequence[str], split: str,
                model_name: str) -> list[dict]:
  """The score-file lines of a scored item (see the module docstring)."""
  lines = []
  for condition, joint, y_t in conditions(item, requested):
    s = {"joint": scores[joint], "same_audio": scores["same_audio"]}
    if "no_audio" in scores:
      s["no_audio"] = scores["no_audio"]
    perturbed = "perturbed" if condition == "adversarial" else PERTURBED_FAITHFUL
    if perturbed in scores:
      s["perturbed"] = scores[perturbed]
    if "irrelevant" in scores:
      s["irrelevant"] = scores["irrelevant"]
    line = {"id": item.id, "condition": condition, "candidates": list(item.candidates), "y_a": item.answer,
            "y_t": y_t, "scores": {b: [float(x) for x in v] for b, v in s.items()}, "split": split,
            "benchmark": item.benchmark, "model": model_name}
    if item.task is not None:
      line["task"] = item.task
    if item.modality != "audio":
      line["modality"] = item.modality
    lines.append(line)
  return lines


def metrics_args(scores: Path, *, select: bool, budget: float = 5.0, n_bootstrap: int = 0,
                 fine_grid: bool = False) -> argparse.Namespace:
  """The arguments of `jaxalm metrics SCORES --method all --json [--select --budget B]
  [--bootstrap N] [--fine-grid]`."""
  return argparse.Namespace(scores=str(scores), method=["all"], lam=None, tau=None, alpha_max=None, alpha=None,
                            json=True, select=select, split_field="split", dev="dev", test="test", budget=budget,
                            fine_grid=fine_grid, bootstrap=n_bootstrap)


def _points(correct: np.ndarray, joint_correct: np.ndarray, adversarial: np.ndarray) -> np.ndarray:
  """(faithful_drop, conflict_gain) per grid entry: [G, n], [n], [n] -> [G, 2]."""
  conf = 100.0 * correct[:, adversarial].mean(axis=1)
  faith = 100.0 * correct[:, ~adversarial].mean(axis=1)
  j_conf = 100.0 * joint_correct[adversarial].mean()
  j_faith = 100.0 * joint_correct[~adversarial].mean()
  return np.stack([j_faith - faith, conf - j_conf], axis=1)


def frontier_study(arrays, methods: Sequence[str], *, n_bootstrap: int = 1000, seed: int = 0,
                   budgets: Sequence[float] = NAUC_BUDGETS, fine_grid: bool = True) -> dict:
  """Operating points of each method's grid, frontier and nAUC@0-B with bootstrap CIs.

  Args:
    arrays: `ScoreArrays` with adversarial and faithful lines.
    methods: rules of `jaxalm.correction` whose reference branch `arrays` has.
  Returns:
    {method: {"points": [G, 2] (drop, gain), "params": [G dicts],
              "nauc": {B: (estimate, lo, hi)}}}; the CI resamples adversarial and faithful
    lines with replacement, separately, `n_bootstrap` times.
  """
  from jaxalm import correction, metrics
  adv = np.asarray(arrays.adversarial, bool)
  joint_correct = metrics.predictions(arrays.branches["joint"], arrays.mask) == arrays.y_a
  rng = np.random.default_rng(seed)
  draws = np.concatenate([rng.choice(np.flatnonzero(adv), size=(n_bootstrap, int(adv.sum()))),
                          rng.choice(np.flatnonzero(~adv), size=(n_bootstrap, int((~adv).sum())))], axis=1)
  out = {}
  for m in methods:
    grid = correction.method_grid(m, fine_grid)
    correct = correction.grid_predictions(m, arrays.branches, grid, arrays.mask) == arrays.y_a[None]
    points = _points(correct, joint_correct, adv)
    est = {b: metrics.nauc(points, b) for b in budgets}
    boot = {b: [] for b in budgets}
    for idx in draws:
      pts = _points(correct[:, idx], joint_correct[idx], adv[idx])
      for b in budgets:
        boot[b].append(metrics.nauc(pts, b))
    nauc = {}
    for b in budgets:
      lo, hi = np.percentile(boot[b], [2.5, 97.5]) if n_bootstrap else (np.nan, np.nan)
      nauc[b] = (est[b], float(lo), float(hi))
    out[m] = {"points": points, "params": grid, "nauc": nauc}
  return out


def summarize(scores_path: Path, *, budget: float = 5.0, n_bootstrap: int = 1000, seed: int = 0,
              fine_grid: bool = False) -> tuple[dict, Any, dict]:
  """Summary of a score file: diagnostics, selection under budget, nAUC.

  Returns:
    (summary dict, ScoreArrays of every line, frontier_study of the nAUC population).
  """
  import jax

  from jaxalm import metrics
  from jaxalm.commands import metrics as metrics_cmd
  from jaxalm.correction import METHODS, REFERENCE_BRANCH
  from jaxalm.scorefile import read_scorefile, to_arrays
  lines = read_scorefile(scores_path)
  if not lines:
    raise ValueError(f"{scores_path}: no scored items")
  arrays = to_arrays(lines)
  methods = [m for m in METHODS if REFERENCE_BRANCH[m] in arrays.branches]
  split = arrays.extra.get("split")
  split = np.array(["" if s is None else s for s in split], object) if split is not None else np.full(len(arrays), "")
  dev, test = split == "dev", split == "test"
  out: dict[str, Any] = {}
  with jax.enable_x64(True):
    out["diagnostics"] = metrics_cmd.summarize(arrays, metrics_args(scores_path, select=False, n_bootstrap=n_bootstrap))
    adv = arrays.adversarial
    problem = None
    if not test.any():
      problem = "no items in the test split"
    elif not (adv[dev].any() and (~adv[dev]).any()):
      problem = "selection needs both adversarial and faithful lines in the dev split"
    if problem is None:
      out["selection"] = metrics_cmd.summarize(
          arrays, metrics_args(scores_path, select=True, budget=budget, n_bootstrap=n_bootstrap, fine_grid=fine_grid))
    else:
      out["selection"] = {"error": problem}
    population = "test" if test.any() else "all"
    part = arrays.subset(test) if test.any() else arrays
    frontier: dict = {}
    if part.adversarial.any() and (~part.adversarial).any():
      frontier = frontier_study(part, methods, n_bootstrap=n_bootstrap, seed=seed)
      out["nauc"] = {"population": population, "n_lines": len(part), "grid": "fine", "n_bootstrap": n_bootstrap,
                     "seed": seed, "methods": {
                         m: {f"nauc@0-{b:g}": {"value": finite(v), "ci": [finite(lo), finite(hi)]}
                             for b, (v, lo, hi) in f["nauc"].items()} for m, f in frontier.items()}}
      grid = metrics.budget_grid(max(NAUC_BUDGETS), 0.5)
      out["frontier"] = {"population": population, "budgets": [float(b) for b in grid],
                         "gain": {m: [float(g) for g in metrics.frontier(f["points"], grid)]
                                  for m, f in frontier.items()}}
    else:
      out["nauc"] = {"population": population, "error": "nAUC needs adversarial and faithful lines"}
  out["counts"] = {"n_lines": len(arrays), "n_items": int(len(set(arrays.ids))),
                   "n_adversarial": int(arrays.adversarial.sum()), "n_faithful": int((~arrays.adversarial).sum()),
                   "n_dev_lines": int(dev.sum()), "n_test_lines": int(test.sum())}
  return out, arrays, frontier


def plot(out_dir: Path, arrays, frontier: dict, budget: float) -> dict[str, str]:
  """margins.png (M_A vs M_J of adversarial lines) and frontier.png; returns their file names."""
  from jaxalm import metrics, plots
  adv = arrays.adversarial
  m_a = metrics.margins(arrays.branches["same_audio"], arrays.y_a, arrays.y_t)[adv]
  m_j = metrics.margins(arrays.branches["joint"], arrays.y_a, arrays.y_t)[adv]
  plots.margin_scatter(m_a, m_j, out_dir / MARGINS_PNG)
  grid = metrics.budget_grid(max(max(NAUC_BUDGETS), budget))
  curves = {m: (grid, metrics.frontier(f["points"], grid)) for m, f in frontier.items()}
  points = {m: (f["points"][:, 0], f["points"][:, 1]) for m, f in frontier.items()}
  plots.frontier_plot(curves, out_dir / FRONTIER_PNG, points=points, budget=budget)
  return {"margins": MARGINS_PNG, "frontier": FRONTIER_PNG}


def check_resumable(scores_path: Path, model_name: str) -> None:
  """Raises ValueError if an existing score file holds another model's scores."""
  from jaxalm.scorefile import completed_ids, read_scorefile
  if not scores_path.exists():
    return
  completed_ids(scores_path)  # drops a torn last line
  others = sorted({str(it.extra.get("model")) for it in read_scorefile(scores_path)} - {model_name})
  if others:
    raise ValueError(f"{scores_path} holds scores of model(s) {others}, not {model_name!r}; "
                     f"write to another output directory")


def run_arbitration(model, data: str | Path, out: str | Path, *, format: str | None = None,
                    branches: Sequence[str] | None = None, batch_size: int = 4, snr_db: float = 0.0,
                    budget: float = 5.0, n_bootstrap: int = 1000, seed: int = 0, dev_fraction: float = 0.5,
                    fine_grid: bool = False, media_root: str | Path | None = None, mode: str | None = None,
                    load_media: Callable | None = None, show_progress: bool = True) -> dict:
  """Runs the arbitration study and writes OUT/scores.jsonl, OUT/summary.json and the plots.

  Resumable: lines already in OUT/scores.jsonl are kept and their (id, condition) pairs
  are not scored again; a torn last line is dropped.

  Args:
    model: a `jaxalm.Model` or a checkpoint directory.
    data: a benchmark file (`jaxalm.data.read_items`).
    out: output directory (created).
    format: reader format ("mcr", "alme", "mc2"); inferred if None.
    branches: requested branches (default `default_branches(model)`).
    batch_size: items per compiled call.
    snr_db: noise level of the perturbed branches.
    budget: faithful-drop budget (pp) of the dev-split selection.
    n_bootstrap: bootstrap draws of the confidence intervals.
    seed: seed of the dev/test split of items without one, and of the nAUC bootstrap.
    dev_fraction: share of unassigned items put in the dev split.
    fine_grid: select on the finer hyperparameter grid (the frontier always uses it).
    media_root, mode: passed to `read_items`.
    load_media: path -> media array (default: the family's `load_media`, else audio).
  Returns:
    The summary (also written to OUT/summary.json).
  """
  from jaxalm.scorefile import ScoreFileWriter
  if isinstance(model, (str, os.PathLike)):
    model = load_model(model)
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  requested = check_branches(branches or default_branches(model))
  read = read_items(data, format, on_error="skip", media_root=media_root, mode=mode)
  skipped: list = list(read.skipped)
  items = []
  for it in read.items:
    if (problem := modality_problem(it, model)) is not None:
      skipped.append((it.id, problem))
      continue
    if "adversarial" in it.evidence and it.text_answer is None:
      skipped.append((it.id, "adversarial evidence without a text_answer (y_t): no adversarial line"))
    if not conditions(it, requested):
      skipped.append((it.id, f"no line to score: needs adversarial evidence with a text_answer or faithful "
                             f"evidence (has {sorted(it.evidence) or 'none'})"))
      continue
    items.append(it)
  splits = split_by_id(items, seed, dev_fraction)
  load_media = load_media or getattr(model.family, "load_media", None)
  scorers: dict[tuple[str, ...], Scorer] = {}

  def scorer_for(names):
    if names not in scorers:
      scorers[names] = Scorer(model, names, batch_size=batch_size, snr_db=snr_db, load_media=load_media)
    return scorers[names]

  def plan(it):
    return scorer_for(item_branches(it, requested)).plan(it), None

  scores_path = out / SCORES
  name = Path(str(model.path)).name
  check_resumable(scores_path, name)
  with ScoreFileWriter(scores_path) as writer:
    done = set(writer.completed)
    todo = [it for it in items if any((it.id, c) not in done for c, _, _ in conditions(it, requested))]
    bar = progress(len(todo), "arbitration", show_progress)
    n_scored = 0
    try:
      n_skipped = len(skipped)
      for batch in score_batches(plan, todo, scorer_for(("same_audio",)), batch_size, skipped):
        n_scored += len(batch)
        for it, _, scores in batch:
          for line in score_lines(it, scores, requested, splits[it.id], name):
            if (line["id"], line["condition"]) not in done:
              writer.write(line)
              done.add((line["id"], line["condition"]))
        bar.update(len(batch) + len(skipped) - n_skipped)
        n_skipped = len(skipped)
      bar.update(len(skipped) - n_skipped)
    finally:
      bar.close()

  summary: dict[str, Any] = {
      "model": str(model.path), "data": str(data), "format": read.format, "branches": list(requested),
      "snr_db": snr_db, "budget_pp": budget, "seed": seed, "dev_fraction": dev_fraction,
      "files": {"scores": SCORES, "summary": SUMMARY}, "n_rows_read": len(read.items) + len(read.skipped),
      "n_items_scored_this_run": n_scored, "skipped": skipped_list(skipped)}
  if scores_path.stat().st_size:
    body, arrays, frontier = summarize(scores_path, budget=budget, n_bootstrap=n_bootstrap, seed=seed,
                                       fine_grid=fine_grid)
    summary.update(body)
    summary["files"].update(plot(out, arrays, frontier, budget))
  else:
    summary["error"] = "no item could be scored"
  write_json(out / SUMMARY, summary)
  return summary
