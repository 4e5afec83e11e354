"""The per-item score file: jaxalm's interchange format (JSON Lines).

One line per (item, condition), a JSON object with:

  id          str, the item id (shared by the item's conditions)
  condition   "adversarial" (text evidence supports y_t != y_a) or "faithful"
              (evidence agrees with the audio; y_t == y_a)
  candidates  list of str, the closed candidate set (at least 2, distinct)
  y_a         str, the audio-supported answer; one of `candidates`
  y_t         str, the answer the text evidence supports; one of `candidates`
  scores      {branch: [float, ...]}: per branch, the raw log-probability of each
              candidate's full label (teacher-forced, summed over its tokens), in
              `candidates` order. Required: `joint` (question + evidence) and
              `same_audio` (question, no evidence). Where computed: `no_audio` (audio
              omitted; AAD reference) and `perturbed` (noised audio; ACD reference).
              Other branch names are allowed and kept.

Any other field is optional and kept (e.g. `task`, `model`, `split` with values
`dev` / `test`). (id, condition) is unique within a file. Scores must be finite.
Example:

  {"id": "aqa_0000", "condition": "adversarial", "candidates": ["yes", "no"],
   "y_a": "no", "y_t": "yes", "scores": {"joint": [-0.13, -2.1],
   "same_audio": [-2.6, -0.08]}, "task": "MCR-AQA", "split": "test"}

`read_scorefile` validates every line and raises `ScoreFileError` listing each bad
line with its number and item id. `ScoreFileWriter` appends one line at a time with
flush + fsync, so a long run can resume: `completed_ids` returns the (id, condition)
pairs already written and truncates a torn last line left by a crash.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

CONDITIONS = ("adversarial", "faithful")
REQUIRED_BRANCHES = ("joint", "same_audio")
KNOWN_BRANCHES = ("joint", "same_audio", "no_audio", "perturbed")
_CORE = ("id", "condition", "candidates", "y_a", "y_t", "scores")


class ScoreFileError(ValueError):
  """A malformed score file. `errors` lists (line number, item id or None, message)."""

  def __init__(self, path, errors: list[tuple[int, str | None, str]]):
    self.path, self.errors = str(path), errors
    shown = [f"{self.path}:{ln}" + (f" (id {i!r})" if i is not None else "") + f": {m}"
             for ln, i, m in errors[:20]]
    more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
    super().__init__("\n".join(shown) + more)


@dataclasses.dataclass(frozen=True)
class ScoreItem:
  """One line of a score file."""
  id: str
  condition: str
  candidates: tuple[str, ...]
  y_a: str
  y_t: str
  scores: Mapping[str, tuple[float, ...]]
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def key(self) -> tuple[str, str]:
    return (self.id, self.condition)

  def to_dict(self) -> dict:
    d = {"id": self.id, "condition": self.condition, "candidates": list(self.candidates),
         "y_a": self.y_a, "y_t": self.y_t,
         "scores": {b: [float(s) for s in v] for b, v in self.scores.items()}}
    d.update(self.extra)
    return d


def item_from_dict(d: Any) -> ScoreItem:
  """Validates a parsed line and builds a ScoreItem (raises ValueError with the reason)."""
  if not isinstance(d, dict):
    raise ValueError("line is not a JSON object")
  missing = [k for k in _CORE if k not in d]
  if missing:
    raise ValueError(f"missing field(s) {missing}")
  if not isinstance(d["id"], str) or not d["id"]:
    raise ValueError("`id` must be a non-empty string")
  if d["condition"] not in CONDITIONS:
    raise ValueError(f"`condition` must be one of {CONDITIONS}, got {d['condition']!r}")
  cands = d["candidates"]
  if not isinstance(cands, list) or not all(isinstance(c, str) for c in cands):
    raise ValueError("`candidates` must be a list of strings")
  if len(cands) < 2:
    raise ValueError(f"need at least 2 candidates, got {len(cands)}")
  if len(set(cands)) != len(cands):
    raise ValueError(f"duplicate candidates {cands}")
  for field in ("y_a", "y_t"):
    if d[field] not in cands:
      raise ValueError(f"`{field}` {d[field]!r} not in candidates {cands}")
  if d["condition"] == "faithful" and d["y_t"] != d["y_a"]:
    raise ValueError(f"faithful item needs y_t == y_a, got {d['y_t']!r} != {d['y_a']!r}")
  if d["condition"] == "adversarial" and d["y_t"] == d["y_a"]:
    raise ValueError(f"adversarial item needs y_t != y_a, both are {d['y_a']!r}")
  scores = d["scores"]
  if not isinstance(scores, dict):
    raise ValueError("`scores` must be an object {branch: [score per candidate]}")
  absent = [b for b in REQUIRED_BRANCHES if b not in scores]
  if absent:
    raise ValueError(f"`scores` lacks branch(es) {absent}")
  clean = {}
  for branch, vals in scores.items():
    if not isinstance(vals, list):
      raise ValueError(f"scores[{branch!r}] must be a list")
    if len(vals) != len(cands):
      raise ValueError(f"scores[{branch!r}] has {len(vals)} values for {len(cands)} candidates")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
      raise ValueError(f"scores[{branch!r}] must hold numbers")
    if not all(math.isfinite(v) for v in vals):
      raise ValueError(f"scores[{branch!r}] has a non-finite value {vals}")
    clean[branch] = tuple(float(v) for v in vals)
  extra = {k: v for k, v in d.items() if k not in _CORE}
  return ScoreItem(d["id"], d["condition"], tuple(cands), d["y_a"], d["y_t"], clean, extra)


def _parse_constant(name):
  raise ValueError(f"non-finite number {name}")


def _parse(line: str) -> ScoreItem:
  try:
    d = json.loads(line, parse_constant=_parse_constant)
  except json.JSONDecodeError as e:
    raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
  return item_from_dict(d)


def _id_of(line: str) -> str | None:
  try:
    d = json.loads(line, parse_constant=lambda name: None)
    return str(d["id"]) if isinstance(d, dict) and "id" in d else None
  except (json.JSONDecodeError, ValueError):
    return None


def _lines(data: bytes):
  """Splits on b"\n" only (labels may hold other line separators), keeping the ends."""
  parts = data.split(b"\n")
  for k, part in enumerate(parts):
    last = k == len(parts) - 1
    if last and not part:
      return
    yield part + (b"" if last else b"\n")


def _scan(path: Path, data: bytes, allow_torn_tail: bool):
  """Parses a file. Returns (items, byte offset of the end of the last good line)."""
  items, errors, seen = [], [], {}
  offset = good_end = 0
  for lineno, raw in enumerate(_lines(data), 1):
    offset += len(raw)
    torn = not raw.endswith(b"\n")
    line = raw.decode("utf-8", errors="replace")
    if not line.strip():
      good_end = offset
      continue
    try:
      item = _parse(line)
    except ValueError as e:
      if torn and allow_torn_tail:
        break  # a crash in mid-write: drop it
      msg = f"{e} (truncated last line?)" if torn else str(e)
      errors.append((lineno, _id_of(line), msg))
      continue
    if item.key in seen:
      errors.append((lineno, item.id, f"duplicate id+condition {item.key} (first on line {seen[item.key]})"))
      continue
    seen[item.key] = lineno
    items.append(item)
    good_end = offset
  if errors:
    raise ScoreFileError(path, errors)
  return items, good_end


def read_scorefile(path: str | os.PathLike) -> list[ScoreItem]:
  """Reads and validates a score file; raises ScoreFileError naming each bad line and id."""
  path = Path(path)
  return _scan(path, path.read_bytes(), allow_torn_tail=False)[0]


def _repair(path: Path) -> list[ScoreItem]:
  """Truncates a torn last line (no newline, not a valid item); completes a valid one."""
  if not path.exists():
    return []
  data = path.read_bytes()
  items, good_end = _scan(path, data, allow_torn_tail=True)
  if good_end < len(data):
    with open(path, "r+b") as f:
      f.truncate(good_end)
      f.flush()
      os.fsync(f.fileno())
  elif data and not data.endswith(b"\n"):
    with open(path, "ab") as f:  # a complete item that only lacks its newline
      f.write(b"\n")
      f.flush()
      os.fsync(f.fileno())
  return items


def completed_ids(path: str | os.PathLike) -> set[tuple[str, str]]:
  """(id, condition) pairs already in a score file (empty if it does not exist).

  A torn last line (a crash mid-write) is dropped and the file truncated back to the
  last complete line, so appending resumes without duplicating or losing items. Any
  other malformed line raises ScoreFileError.
  """
  return {it.key for it in _repair(Path(path))}


def _to_builtin(o):
  if hasattr(o, "tolist"):  # numpy / jax arrays and scalars
    return o.tolist()
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _dumps(item: ScoreItem | Mapping[str, Any]) -> tuple[ScoreItem, str]:
  d = item.to_dict() if isinstance(item, ScoreItem) else dict(item)
  text = json.dumps(d, allow_nan=True, default=_to_builtin)
  checked = item_from_dict(json.loads(text, parse_constant=_parse_constant))
  return checked, json.dumps(checked.to_dict(), ensure_ascii=False, allow_nan=False)


class ScoreFileWriter:
  """Appends validated items to a score file, one fsync'ed line each.

  Opening repairs a torn last line (see `completed_ids`); writing an (id, condition)
  already in the file raises ValueError.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    new = not self.path.exists()
    self._keys = {it.key for it in _repair(self.path)}
    self._f = open(self.path, "a", encoding="utf-8")
    if new:
      self._fsync_dir()

  def _fsync_dir(self):
    try:
      fd = os.open(self.path.parent, os.O_RDONLY)
    except OSError:
      return
    try:
      os.fsync(fd)
    except OSError:
      pass
    finally:
      os.close(fd)

  @property
  def completed(self) -> frozenset[tuple[str, str]]:
    return frozenset(self._keys)

  def write(self, item: ScoreItem | Mapping[str, Any]) -> None:
    checked, line = _dumps(item)
    if checked.key in self._keys:
      raise ValueError(f"{self.path}: duplicate id+condition {checked.key}")
    self._f.write(line + "\n")
    self._f.flush()
    os.fsync(self._f.fileno())
    self._keys.add(checked.key)

  def close(self) -> None:
    if not self._f.closed:
      self._f.close()

  def __enter__(self) -> "ScoreFileWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def write_scorefile(path: str | os.PathLike, items: Iterable[ScoreItem | Mapping[str, Any]]) -> Path:
  """Writes a new score file (replacing any file at `path`) from validated items."""
  path = Path(path)
  lines, keys = [], set()
  for item in items:
    checked, line = _dumps(item)
    if checked.key in keys:
      raise ValueError(f"duplicate id+condition {checked.key}")
    keys.add(checked.key)
    lines.append(line + "\n")
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(lines)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return path


# ------------------------------------------------------------------------ arrays

@dataclasses.dataclass(frozen=True)
class ScoreArrays:
  """Score file items as padded arrays (candidate axis padded with -inf).

  ids [n] str; condition [n] str; adversarial [n] bool; y_a, y_t [n] int candidate
  indices; mask [n, C] bool (real candidates); branches: name -> [n, C] float64 candidate
  scores (candidate log-softmaxed when built with normalize=True), for the branches every
  item has; extra: field -> [n] object array (None where an item lacks it).
  """
  ids: np.ndarray
  condition: np.ndarray
  adversarial: np.ndarray
  y_a: np.ndarray
  y_t: np.ndarray
  mask: np.ndarray
  branches: Mapping[str, np.ndarray]
  extra: Mapping[str, np.ndarray]

  def __len__(self) -> int:
    return len(self.ids)

  def subset(self, where) -> "ScoreArrays":
    """Items selected by a bool [n] mask or an index array."""
    w = np.asarray(where)
    pick = lambda a: a[w]
    return ScoreArrays(pick(self.ids), pick(self.condition), pick(self.adversarial), pick(self.y_a),
                       pick(self.y_t), pick(self.mask), {k: pick(v) for k, v in self.branches.items()},
                       {k: pick(v) for k, v in self.extra.items()})


def to_arrays(items: Iterable[ScoreItem], normalize: bool = True) -> ScoreArrays:
  """Stacks items into ScoreArrays; normalize applies the candidate log-softmax."""
  items = list(items)
  n = len(items)
  width = max((len(it.candidates) for it in items), default=2)
  mask = np.zeros((n, width), bool)
  for i, it in enumerate(items):
    mask[i, :len(it.candidates)] = True
  names = [b for b in (items[0].scores if items else ()) if all(b in it.scores for it in items)]
  branches = {}
  for b in names:
    s = np.full((n, width), -np.inf, np.float64)
    for i, it in enumerate(items):
      s[i, :len(it.candidates)] = it.scores[b]
    if normalize:
      m = s.max(axis=1, keepdims=True)
      s = s - (m + np.log(np.exp(s - m).sum(axis=1, keepdims=True)))
    branches[b] = s
  fields = sorted({k for it in items for k in it.extra})
  extra = {}
  for k in fields:
    col = np.empty(n, object)
    col[:] = [it.extra.get(k) for it in items]
    extra[k] = col
  idx = lambda it, y: it.candidates.index(y)
  return ScoreArrays(
    ids=np.array([it.id for it in items], object),
    condition=np.array([it.condition for it in items], object),
    adversarial=np.array([it.condition == "adversarial" for it in items], bool),
    y_a=np.array([idx(it, it.y_a) for it in items], np.int64),
    y_t=np.array([idx(it, it.y_t) for it in items], np.int64),
    mask=mask, branches=branches, extra=extra)
