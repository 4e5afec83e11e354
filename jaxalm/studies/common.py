"""Pieces shared by the studies: model cache, batched scoring loop, resumable JSONL, atomic JSON."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from jaxalm.branches import BranchError
from jaxalm.data.schema import Item

_MODEL_CACHE: dict = {}


def load_model(path: str | os.PathLike, dtype: str | None = None):
  """`jaxalm.load`, keeping the last model loaded so that in-process reruns reuse it (and
  its compiled scoring functions)."""
  import jaxalm
  from jaxalm import checkpoint
  p = Path(path).resolve()
  meta = p / checkpoint.META
  key = (str(p), dtype, meta.stat().st_mtime_ns if meta.exists() else None)
  if key not in _MODEL_CACHE:
    _MODEL_CACHE.clear()
    _MODEL_CACHE[key] = jaxalm.load(p, dtype=dtype)
  return _MODEL_CACHE[key]


def model_modality(model) -> str:
  """"audio" or "image": the media kind the model's family takes."""
  declared = getattr(model.family, "MODALITY", None)
  if declared is not None:
    return declared
  return "image" if "vision_config" in model.hf_config and "audio_config" not in model.hf_config else "audio"


def modality_problem(item: Item, model) -> str | None:
  """Why the model cannot take an item's media, or None."""
  modality = model_modality(model)
  if item.modality == modality:
    return None
  return f"{item.modality} item, but the model ({model.hf_config.get('model_type')}) takes {modality}"


def progress(total: int, desc: str, enabled: bool = True):
  """A tqdm bar on stderr."""
  from tqdm.auto import tqdm
  return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


PlanFn = Callable[[Item], tuple[Any, Any]]


def score_batches(plan: PlanFn, items: Iterable[Item], scorer, batch_size: int,
                  skipped: list) -> Iterator[list[tuple[Item, Any, dict[str, np.ndarray]]]]:
  """Plans items and scores them `batch_size` at a time, in one compiled call per batch.

  Args:
    plan: item -> (scorer plan, info); may raise BranchError / ValueError / OSError, and
      the item is then appended to `skipped` as (id, reason).
    scorer: any `Scorer` of the model (plans carry their own branches).
  Yields:
    per batch, [(item, info, {branch: [C] raw candidate log-probs})].
  """
  batch: list = []

  def flush():
    scores = scorer.score_plans([p for _, _, p in batch])
    return [(it, info, s) for (it, info, _), s in zip(batch, scores)]

  for item in items:
    try:
      p, info = plan(item)
    except (BranchError, ValueError, OSError) as e:
      skipped.append((item.id, str(e)))
      continue
    batch.append((item, info, p))
    if len(batch) == batch_size:
      yield flush()
      batch = []
  if batch:
    yield flush()


def finite(x) -> float | None:
  """A float for JSON, None for nan / None."""
  if x is None:
    return None
  x = float(x)
  return None if math.isnan(x) else x


def write_json(path: Path, data: Any) -> Path:
  """Writes JSON atomically (temp file + rename)."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
  os.replace(tmp, path)
  return path


def skipped_list(entries: Iterable[tuple[Any, str]]) -> list[dict]:
  """[(id or row number, reason)] -> [{"id", "reason"}], first entry per (id, reason)."""
  out, seen = [], set()
  for item_id, reason in entries:
    if (item_id, reason) not in seen:
      seen.add((item_id, reason))
      out.append({"id": item_id, "reason": reason})
  return out


def _scan_jsonl(path: Path, data: bytes) -> tuple[dict[str, dict], int]:
  """Records by id of the complete lines, and the byte offset where they end.

  The last line is complete only if it ends with a newline: anything after the last newline
  is a torn write and is ignored. A bad complete line raises ValueError naming it.
  """
  records: dict[str, dict] = {}
  lines = data.split(b"\n")[:-1]
  good_end = 0
  for n, raw in enumerate(lines, 1):
    good_end += len(raw) + 1
    if not raw.strip():
      continue
    try:
      rec = json.loads(raw)
    except ValueError as e:
      raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
      raise ValueError(f"{path}:{n}: not an object with a string id")
    if rec["id"] in records:
      raise ValueError(f"{path}:{n}: duplicate id {rec['id']!r}")
    records[rec["id"]] = rec
  return records, good_end


class JsonlWriter:
  """Appends JSON objects keyed by `id`, one fsync'ed line each; resumes an existing file.

  Opening truncates a torn last line (a crash mid-write) back to the last complete line.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self.records: dict[str, dict] = {}
    if self.path.exists():
      data = self.path.read_bytes()
      self.records, good_end = _scan_jsonl(self.path, data)
      if good_end < len(data):
        with open(self.path, "r+b") as f:
          f.truncate(good_end)
          f.flush()
          os.fsync(f.fileno())
    self._f = open(self.path, "a", encoding="utf-8")

  def write(self, record: dict) -> None:
    if record["id"] in self.records:
      raise ValueError(f"{self.path}: duplicate id {record['id']!r}")
    self._f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    self._f.flush()
    os.fsync(self._f.fileno())
    self.records[record["id"]] = record

  def close(self) -> None:
    if not self._f.closed:
      self._f.close()

  def __enter__(self) -> "JsonlWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The complete records of a JSONL file written by `JsonlWriter`, in file order."""
  path = Path(path)
  return list(_scan_jsonl(path, path.read_bytes())[0].values())
