"""Readers for local benchmark files: JSON, JSONL or CSV (by extension) -> `Item`s.

Every reader resolves relative media paths against `media_root` (default: the data
file's directory), checks that the media exist (`check_media`), validates each row into
an `Item`, and reports a bad row with the file, its row ("line N" in JSONL/CSV, "entry N"
in a JSON array, 1-based) and its item id when it has one. With `on_error="skip"` bad
rows are left out and listed in `ReadResult.skipped`; with "raise" the first one raises
`DataError`.

Accepted layouts (field names separated by | are alternatives, first one preferred):

mcr (MCR-Bench, benchmark "mcr-bench"): the released `AQA.json` / `SER.json` / `VSC.json`
  rows `{"audio", "gt", "faithful", "adversarial", "irrelevant", "neutral"}`, where
  `neutral` is the question without a description and the other three are the evidence
  texts; or our own JSONL:
    {"id": "aqa_0000", "audio": "audio/a.wav", "question": "...",
     "candidates": ["yes", "no"], "answer": "no", "text_answer": "yes",
     "evidence": {"adversarial": "...", "faithful": "...", "irrelevant": "..."},
     "task": "aqa", "split": "test", "meta": {...}}
  Fields: id|sample_id (default "{task}_{row:04d}", row counted from 0, task from the
  file name, as in the [ARB] split files), audio|audio_path|media, question|neutral,
  candidates|choices (default: the [ARB] label set of the task: aqa, vsc, ser),
  answer|gt|y_a|ground_truth, text_answer|y_t|adversarial_answer (default: the other
  candidate of a two-way task), evidence texts top-level or under "evidence" (empty
  ones are absent). With the default label sets a `gt` that differs only in case, or is
  a MELD emotion name (joy, sadness, ...), is mapped onto the label (our choice).
alme (ALME, benchmark "alme"): the released `stimuli.jsonl` rows
    {"stimulus_id", "audio_path", "ref_text", "conflict_text", "language",
     "question": {"question_text", "choices": [a, b], "correct_answer", "flip_type"}}
  (audio paths are relative to the Common Voice root: pass `media_root`); or flat rows
  {"id", "audio", "question", "option_a", "option_b" (or "options": [a, b]), "answer"
  (letter or option text), "claim"|"conflict_text" (the conflicting transcript claim),
  "ref_text" (optional faithful transcript)}. Items get candidates ("A", "B"), the
  answer letter, text_answer the other letter, `options` the option texts.
mmau (MMAU-style multiple choice, benchmark "mmau", no evidence): the released
  `mmau-test-mini.json` rows {"id", "audio_id", "question", "choices", "answer", "task",
  "split", "dataset", "category", "sub-category", "difficulty"}; also audio|audio_path,
  instruction (question), candidates, ground_truth.
mc2 (MC2 vision, benchmark "mc2", modality "image"): rows {"idx"|"id", "image_path",
  "question", "answer_vision", "answer_text", "context" (or text_context), "task",
  "context_mode"}; score fields of the [ARB] cached files are ignored. `mode` (argument,
  else the row's context_mode) is "conflict" (context = adversarial evidence) or
  "consistent" (context = faithful evidence). Candidates (answer_vision, answer_text),
  answer = answer_vision, text_answer = answer_text. Rows without a context give items
  without evidence.

CSV: one row per item with the flat field names; list fields (candidates, choices,
options) are a JSON list or "|"-separated; empty cells are missing values.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from jaxalm.data.schema import EVIDENCE_KINDS, Item, ItemError

FORMATS = ("mcr", "alme", "mmau", "mc2")
_FORMAT_ALIASES = {"mcr-bench": "mcr", "mcrbench": "mcr", "mcr_bench": "mcr", "mmau-style": "mmau"}

# [ARB] label sets of the MCR-Bench tasks (its configs/tasks.yaml).
TASK_CANDIDATES = {
    "aqa": ("yes", "no"),
    "vsc": ("Laughter", "Sigh", "Cough", "Throat clearing", "Sneeze", "Sniff"),
    "ser": ("sad", "happy", "fearful", "angry", "surprised", "disgusted", "neutral"),
}
# MELD emotion names -> [ARB] SER labels (our choice, used only with the default label set).
_LABEL_SYNONYMS = {"joy": "happy", "sadness": "sad", "fear": "fearful", "anger": "angry",
                   "surprise": "surprised", "disgust": "disgusted"}

OnError = Literal["raise", "skip"]


class DataError(ValueError):
  """A bad row of a benchmark file: names the file, the row and the item id if known."""

  def __init__(self, path, row: str | None, item_id: str | None, reason: str):
    where = f"{path}" + (f": {row}" if row else "") + (f" (item {item_id!r})" if item_id else "")
    super().__init__(f"{where}: {reason}")
    self.path, self.row, self.item_id, self.reason = str(path), row, item_id, reason


@dataclasses.dataclass(frozen=True)
class ReadResult:
  """Items read from one file, and what was skipped: (item id, or row number, message)."""
  items: tuple[Item, ...]
  skipped: tuple[tuple[str | int, str], ...]
  path: str
  format: str


class _RowError(Exception):
  pass


@dataclasses.dataclass(frozen=True)
class _Ctx:
  path: Path
  media_root: Path
  check_media: bool
  task: str | None
  split: str | None
  mode: str | None
  benchmark: str | None

  @property
  def is_csv(self) -> bool:
    return self.path.suffix.lower() in (".csv", ".tsv")


# ---------------------------------------------------------------------------- records


def _csv_value(v: str | None):
  return None if v is None or v.strip() == "" else v


def _load_records(path: Path) -> Iterator[tuple[str, int, Any]]:
  """(row label, 1-based row number, record or an Exception for an unparseable row)."""
  ext = path.suffix.lower()
  if ext in (".jsonl", ".ndjson"):
    yield from _jsonl_records(path.read_text(encoding="utf-8"))
  elif ext == ".json":
    text = path.read_text(encoding="utf-8")
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      if _looks_like_jsonl(text):  # JSONL saved as .json
        yield from _jsonl_records(text)
        return
      raise DataError(path, None, None, f"not valid JSON: {e}") from None
    records = _json_records(path, data)
    for i, rec in enumerate(records, 1):
      yield f"entry {i}", i, rec
  elif ext in (".csv", ".tsv"):
    with path.open(newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
      for rec in reader:
        line = reader.line_num
        if None in rec:
          yield f"line {line}", line, _RowError(f"{len(rec[None])} more cells than header columns")
          continue
        yield f"line {line}", line, {k.strip(): _csv_value(v) for k, v in rec.items()}
  else:
    raise DataError(path, None, None, f"unknown extension {ext!r}; expected .json, .jsonl or .csv")


def _looks_like_jsonl(text: str) -> bool:
  lines = [l for l in text.splitlines() if l.strip()]
  try:
    return len(lines) > 1 and isinstance(json.loads(lines[0]), dict)
  except json.JSONDecodeError:
    return False


def _jsonl_records(text: str) -> Iterator[tuple[str, int, Any]]:
  for n, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      yield f"line {n}", n, json.loads(line)
    except json.JSONDecodeError as e:
      yield f"line {n}", n, _RowError(f"not valid JSON: {e}")


def _json_records(path: Path, data) -> list:
  if isinstance(data, list):
    return data
  if isinstance(data, dict):
    for key in ("items", "data", "samples", "annotations"):
      if isinstance(data.get(key), list):
        return data[key]
    if data and all(isinstance(v, dict) for v in data.values()):  # {id: record}
      return [{"id": k, **v} if "id" not in v else v for k, v in data.items()]
  raise DataError(path, None, None, "expected a JSON list of records (or {id: record})")


# ---------------------------------------------------------------------------- field helpers


def _get(rec: Mapping, *names: str, required: bool = True):
  for n in names:
    v = rec.get(n)
    if v is not None and not (isinstance(v, str) and not v.strip()):
      return v
  if required:
    alts = f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
    raise _RowError(f"missing field {names[0]!r}{alts}")
  return None


def _str(v, name: str) -> str:
  if not isinstance(v, str):
    raise _RowError(f"field {name!r} must be a string, got {type(v).__name__} {v!r}")
  return v


def _id(v) -> str:
  if isinstance(v, bool) or not isinstance(v, (str, int)):
    raise _RowError(f"id must be a string or an integer, got {type(v).__name__} {v!r}")
  return str(v)


def _str_list(v, name: str, ctx: _Ctx) -> tuple[str, ...]:
  if isinstance(v, str) and ctx.is_csv:
    s = v.strip()
    if s.startswith("["):
      try:
        v = json.loads(s)
      except json.JSONDecodeError as e:
        raise _RowError(f"field {name!r} is not a valid JSON list: {e}") from None
    else:
      v = [p.strip() for p in s.split("|")]
  if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
    raise _RowError(f"field {name!r} must be a list of strings, got {v!r}")
  return tuple(v)


def _meta(rec: Mapping, ctx: _Ctx, keys: Iterable[str] = ()) -> dict:
  meta = rec.get("meta")
  if isinstance(meta, str) and ctx.is_csv:
    try:
      meta = json.loads(meta)
    except json.JSONDecodeError as e:
      raise _RowError(f"field 'meta' is not valid JSON: {e}") from None
  if meta is not None and not isinstance(meta, Mapping):
    raise _RowError(f"field 'meta' must be an object, got {type(meta).__name__}")
  out = dict(meta or {})
  for k in keys:
    if rec.get(k) is not None:
      out[k] = rec[k]
  return out


def _media(rec: Mapping, ctx: _Ctx, *names: str) -> str:
  raw = _str(_get(rec, *names), names[0])
  p = Path(os.path.expanduser(raw))
  if not p.is_absolute():
    p = ctx.media_root / p
  resolved = os.path.normpath(str(p))
  if ctx.check_media and not os.path.exists(resolved):
    raise _RowError(f"media file not found: {resolved}")
  return resolved


def _task_key(task: str | None) -> str | None:
  if task is None:
    return None
  t = task.strip().lower()
  return t[4:] if t.startswith("mcr-") else t


def _pick(value, ctx_value):
  return ctx_value if ctx_value is not None else value


# ---------------------------------------------------------------------------- converters
# Each takes (record, 0-based index, ctx) and returns (id or None, builder): the id is
# known before the rest is validated so that every error can name it.


def _mcr_id(rec, index, ctx) -> str:
  v = _get(rec, "id", "sample_id", required=False)
  if v is not None:
    return _id(v)
  task = _task_key(_pick(rec.get("task"), ctx.task)) or ctx.path.stem.lower()
  return f"{task}_{index:04d}"


def _canonical_label(value: str, candidates: tuple[str, ...]) -> str:
  if value in candidates:
    return value
  v = value.strip().lower()
  v = _LABEL_SYNONYMS.get(v, v)
  hits = [c for c in candidates if c.lower() == v]
  return hits[0] if len(hits) == 1 else value


def _mcr_item(rec, item_id, ctx) -> Item:
  task = _pick(rec.get("task"), ctx.task)
  if task is None and ctx.path.stem.lower() in TASK_CANDIDATES:
    task = ctx.path.stem.lower()
  if task is not None:
    task = _str(task, "task")
  meta = _meta(rec, ctx)
  question = _str(_get(rec, "question", "neutral"), "question")
  if rec.get("question") is not None and rec.get("neutral") is not None:
    meta["neutral"] = rec["neutral"]
  raw_candidates = _get(rec, "candidates", "choices", required=False)
  default_labels = raw_candidates is None
  if default_labels:
    key = _task_key(task)
    if key not in TASK_CANDIDATES:
      raise _RowError(f"missing field 'candidates' (or 'choices'), and task {task!r} has no default label set "
                      f"(known: {sorted(TASK_CANDIDATES)})")
    candidates = TASK_CANDIDATES[key]
  else:
    candidates = _str_list(raw_candidates, "candidates", ctx)
  answer = _str(_get(rec, "answer", "gt", "y_a", "ground_truth"), "answer")
  text_answer = _get(rec, "text_answer", "y_t", "adversarial_answer", required=False)
  if text_answer is not None:
    text_answer = _str(text_answer, "text_answer")
  if default_labels:
    answer_raw, answer = answer, _canonical_label(answer, candidates)
    if answer != answer_raw:
      meta["answer_raw"] = answer_raw
    if text_answer is not None:
      text_answer = _canonical_label(text_answer, candidates)

  nested = rec.get("evidence") or {}
  if not isinstance(nested, Mapping):
    raise _RowError(f"field 'evidence' must be an object, got {type(nested).__name__}")
  unknown = set(nested) - set(EVIDENCE_KINDS) - {"neutral"}
  if unknown:
    raise _RowError(f"unknown evidence kinds {sorted(unknown)}; expected {EVIDENCE_KINDS}")
  evidence = {}
  for kind in EVIDENCE_KINDS:
    text = nested.get(kind, rec.get(kind))
    if text is None or (isinstance(text, str) and not text.strip()):
      continue
    evidence[kind] = _str(text, kind)
  if text_answer is None and "adversarial" in evidence and len(candidates) == 2 and answer in candidates:
    text_answer = candidates[1 - candidates.index(answer)]
  benchmark = _pick(rec.get("benchmark"), ctx.benchmark) or "mcr-bench"
  return Item(id=item_id, modality=rec.get("modality") or "audio",
              media=_media(rec, ctx, "audio", "audio_path", "media"), question=question,
              candidates=candidates, answer=answer, evidence=evidence, text_answer=text_answer,
              task=task, benchmark=_str(benchmark, "benchmark"),
              split=_pick(rec.get("split"), ctx.split), meta=meta)


def _alme_id(rec, index, ctx) -> str:
  v = _get(rec, "stimulus_id", "id", required=False)
  return _id(v) if v is not None else f"alme_{index:05d}"


_LETTERS = "ABCDEFGHIJ"


def _alme_item(rec, item_id, ctx) -> Item:
  meta = _meta(rec, ctx)
  q = rec.get("question")
  if isinstance(q, Mapping):  # released stimuli.jsonl
    question = _str(_get(q, "question_text", "question"), "question.question_text")
    options = _str_list(_get(q, "choices", "options"), "question.choices", ctx)
    answer = _str(_get(q, "correct_answer", "answer"), "question.correct_answer")
    if q.get("flip_type") is not None:
      meta["flip_type"] = q["flip_type"]
  else:
    question = _str(_get(rec, "question"), "question")
    raw = _get(rec, "options", "choices", required=False)
    if raw is not None:
      options = _str_list(raw, "options", ctx)
    else:
      options = (_str(_get(rec, "option_a", "A"), "option_a"), _str(_get(rec, "option_b", "B"), "option_b"))
    answer = _str(_get(rec, "answer", "correct_answer", "correct_option", "label"), "answer")
    if rec.get("flip_type") is not None:
      meta["flip_type"] = rec["flip_type"]
  if not 2 <= len(options) <= len(_LETTERS):
    raise _RowError(f"expected 2 options (A/B), got {len(options)}: {options!r}")
  letters = tuple(_LETTERS[:len(options)])
  if answer.strip().upper() in letters and answer not in options:
    answer = answer.strip().upper()
  elif answer in options:
    answer = letters[options.index(answer)]
  else:
    raise _RowError(f"answer {answer!r} is neither an option letter {letters} nor one of the options {options!r}")
  claim = _str(_get(rec, "conflict_text", "claim", "transcript_claim", "adversarial", "context"), "conflict_text")
  evidence = {"adversarial": claim}
  ref = _get(rec, "ref_text", "faithful", required=False)
  if ref is not None:
    evidence["faithful"] = _str(ref, "ref_text")
  text_answer = _get(rec, "text_answer", required=False)
  if text_answer is not None:
    text_answer = _str(text_answer, "text_answer")
    text_answer = letters[options.index(text_answer)] if text_answer in options else text_answer.strip().upper()
  elif len(letters) == 2:
    text_answer = letters[1 - letters.index(answer)]
  for k in ("language", "accent_bucket"):
    if rec.get(k) is not None:
      meta[k] = rec[k]
  benchmark = _pick(rec.get("benchmark"), ctx.benchmark) or "alme"
  return Item(id=item_id, modality="audio", media=_media(rec, ctx, "audio_path", "audio", "media"),
              question=question, candidates=letters, answer=answer, evidence=evidence,
              text_answer=text_answer, task=_pick(rec.get("task"), ctx.task) or "alme",
              benchmark=_str(benchmark, "benchmark"), split=_pick(rec.get("split"), ctx.split),
              options=options, meta=meta)


def _mmau_id(rec, index, ctx) -> str:
  v = _get(rec, "id", "question_id", required=False)
  return _id(v) if v is not None else f"{ctx.path.stem}_{index:05d}"


def _mmau_item(rec, item_id, ctx) -> Item:
  benchmark = _pick(rec.get("benchmark"), ctx.benchmark) or "mmau"
  answer = _get(rec, "answer", "ground_truth")
  return Item(id=item_id, modality=rec.get("modality") or "audio",
              media=_media(rec, ctx, "audio_id", "audio", "audio_path", "media"),
              question=_str(_get(rec, "question", "instruction"), "question"),
              candidates=_str_list(_get(rec, "choices", "candidates"), "choices", ctx),
              answer=_str(answer, "answer"), task=_pick(rec.get("task"), ctx.task),
              benchmark=_str(benchmark, "benchmark"), split=_pick(rec.get("split"), ctx.split),
              meta=_meta(rec, ctx, ("dataset", "category", "sub-category", "difficulty")))


def _mc2_id(rec, index, ctx) -> str:
  v = _get(rec, "id", "idx", "question_id", required=False)
  return _id(v) if v is not None else f"mc2_{index:04d}"


MC2_MODES = ("conflict", "consistent")


def _mc2_item(rec, item_id, ctx) -> Item:
  row_mode = rec.get("context_mode", rec.get("mode"))
  if ctx.mode is not None and row_mode is not None and row_mode != ctx.mode:
    raise _RowError(f"row has context_mode {row_mode!r} but mode={ctx.mode!r} was asked for")
  mode = ctx.mode or row_mode
  if mode not in MC2_MODES:
    raise _RowError(f"MC2 mode must be one of {MC2_MODES} (pass mode= or give the row a context_mode), got {mode!r}")
  vision = _str(_get(rec, "answer_vision"), "answer_vision")
  text = _str(_get(rec, "answer_text"), "answer_text")
  context = _get(rec, "context", "text_context", "context_text", required=False)
  evidence = {}
  if context is not None:
    evidence["adversarial" if mode == "conflict" else "faithful"] = _str(context, "context")
  meta = _meta(rec, ctx, ("image_id", "protocol_tier"))
  meta["context_mode"] = mode
  benchmark = _pick(rec.get("benchmark"), ctx.benchmark) or "mc2"
  return Item(id=item_id, modality="image", media=_media(rec, ctx, "image_path", "image", "media"),
              question=_str(_get(rec, "question"), "question"), candidates=(vision, text), answer=vision,
              evidence=evidence, text_answer=text, task=_pick(rec.get("task"), ctx.task),
              benchmark=_str(benchmark, "benchmark"), split=_pick(rec.get("split"), ctx.split), meta=meta)


_CONVERTERS: dict[str, tuple[Callable, Callable]] = {
    "mcr": (_mcr_id, _mcr_item),
    "alme": (_alme_id, _alme_item),
    "mmau": (_mmau_id, _mmau_item),
    "mc2": (_mc2_id, _mc2_item),
}


# ---------------------------------------------------------------------------- public API


def infer_format(record: Mapping) -> str | None:
  """The reader format a record's fields point to, or None."""
  keys = set(record)
  if {"answer_vision", "answer_text"} <= keys:
    return "mc2"
  if isinstance(record.get("question"), Mapping) or keys & {"conflict_text", "option_a", "claim", "transcript_claim"}:
    return "alme"
  if keys & {"gt", "evidence", "neutral", *EVIDENCE_KINDS}:
    return "mcr"
  if keys & {"choices", "candidates"} and keys & {"answer", "ground_truth"}:
    return "mmau"
  return None


def read_items(path: str | os.PathLike, format: str | None = None, *, on_error: OnError = "raise",
               check_media: bool = True, media_root: str | os.PathLike | None = None,
               task: str | None = None, split: str | None = None, mode: str | None = None,
               benchmark: str | None = None) -> ReadResult:
  """Read a local benchmark file into validated `Item`s.

  Args:
    path: a .json, .jsonl or .csv file (layouts in the module docstring).
    format: "mcr", "alme", "mmau" or "mc2"; inferred from the first record's fields if None.
    on_error: "raise" raises `DataError` at the first bad row; "skip" leaves bad rows out
      and lists them in `ReadResult.skipped`.
    check_media: require every media file to exist.
    media_root: directory relative media paths are resolved against (default: the
      file's directory).
    task, split, benchmark: override the rows' values (split e.g. "dev"/"test").
    mode: MC2 only, "conflict" or "consistent" (default: each row's context_mode).

  Returns:
    ReadResult(items, skipped, path, format).
  """
  if on_error not in ("raise", "skip"):
    raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
  path = Path(path)
  if not path.is_file():
    raise DataError(path, None, None, "file not found")
  if format is not None:
    format = _FORMAT_ALIASES.get(format.lower(), format.lower())
    if format not in FORMATS:
      raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
  if mode is not None and mode not in MC2_MODES:
    raise ValueError(f"mode must be one of {MC2_MODES}, got {mode!r}")
  ctx = _Ctx(path=path, media_root=Path(media_root) if media_root is not None else path.parent,
             check_media=check_media, task=task, split=split, mode=mode, benchmark=benchmark)

  items, skipped, seen = [], [], {}
  for index, (label, number, rec) in enumerate(_load_records(path)):
    item_id = None
    try:
      if isinstance(rec, Exception):
        raise rec
      if not isinstance(rec, Mapping):
        raise _RowError(f"expected an object, got {type(rec).__name__}")
      if format is None:
        format = infer_format(rec)
        if format is None:
          raise DataError(path, label, None, f"cannot infer the format from fields {sorted(rec)}; "
                                             f"pass format= (one of {FORMATS})")
      make_id, make_item = _CONVERTERS[format]
      item_id = make_id(rec, index, ctx)
      if item_id in seen:
        raise _RowError(f"duplicate id {item_id!r} (first at {seen[item_id]})")
      item = make_item(rec, item_id, ctx)
    except (_RowError, ItemError) as e:
      reason = e.reason if isinstance(e, ItemError) else str(e)
      err = DataError(path, label, item_id, reason)
      if on_error == "raise":
        raise err from None
      skipped.append((item_id if item_id is not None else number, str(err)))
      continue
    seen[item_id] = label
    items.append(item)
  return ReadResult(items=tuple(items), skipped=tuple(skipped), path=str(path), format=format or "")


def read_mcr(path, **kwargs) -> ReadResult:
  """MCR-Bench-style file; see `read_items`."""
  return read_items(path, "mcr", **kwargs)


def read_alme(path, **kwargs) -> ReadResult:
  """ALME-style file; see `read_items` (pass media_root= the Common Voice root for released stimuli)."""
  return read_items(path, "alme", **kwargs)


def read_mmau(path, **kwargs) -> ReadResult:
  """MMAU-style multiple-choice file (no evidence); see `read_items`."""
  return read_items(path, "mmau", **kwargs)


def read_mc2(path, mode: str | None = None, **kwargs) -> ReadResult:
  """MC2-style vision file in `mode` "conflict" or "consistent"; see `read_items`."""
  return read_items(path, "mc2", mode=mode, **kwargs)


def load_split_ids(path: str | os.PathLike) -> frozenset[str]:
  """Item ids in an [ARB] split file (`{task: [ids]}` or a plain list of ids)."""
  data = json.loads(Path(path).read_text(encoding="utf-8"))
  ids = [i for v in data.values() for i in v] if isinstance(data, dict) else data
  if not all(isinstance(i, str) for i in ids):
    raise DataError(path, None, None, "expected {task: [ids]} or a list of string ids")
  return frozenset(ids)


def assign_splits(items: Iterable[Item], splits: Mapping[str, Iterable[str] | str | os.PathLike],
                  *, drop_unassigned: bool = False) -> tuple[Item, ...]:
  """Set `split` from id lists, e.g. {"dev": "dev_ids.json", "test": test_ids}.

  An id listed in two splits raises; items in no split keep their split, or are dropped
  with `drop_unassigned`.
  """
  where: dict[str, str] = {}
  for name, ids in splits.items():
    ids = load_split_ids(ids) if isinstance(ids, (str, os.PathLike)) else ids
    for i in ids:
      if where.setdefault(i, name) != name:
        raise ValueError(f"item {i!r} is listed in splits {where[i]!r} and {name!r}")
  out = []
  for it in items:
    if it.id in where:
      out.append(dataclasses.replace(it, split=where[it.id]))
    elif not drop_unassigned:
      out.append(it)
  return tuple(out)
