"""The benchmark item every downstream stage consumes (branch building, scoring, metrics).

An `Item` is one question about one audio clip (or image) with a closed candidate set,
the media-supported answer `y_a` and, for conflict benchmarks, evidence texts
(science.md section 1):

- `adversarial`: supports `text_answer` (`y_t != y_a`); the joint branch J.
- `faithful`: agrees with the media; the faithfulness condition F.
- `irrelevant`: unrelated to the question; optional condition.

`neutral` (the prompt with the evidence removed) is not evidence: it is the same-audio
branch A, built from the question alone, so it is never stored in `evidence`.

Items are immutable and validated on construction (also by `dataclasses.replace`); an
invalid item raises `ItemError` naming the item id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Literal

EVIDENCE_KINDS = ("adversarial", "faithful", "irrelevant")
MODALITIES = ("audio", "image")

Modality = Literal["audio", "image"]


class ItemError(ValueError):
  """An item that breaks the schema; the message names the item id."""

  def __init__(self, item_id, reason: str):
    super().__init__(f"item {item_id!r}: {reason}")
    self.item_id = item_id
    self.reason = reason


class FrozenMap(Mapping):
  """A read-only, hashable, picklable mapping (used for `evidence` and `meta`)."""

  __slots__ = ("_data",)

  def __init__(self, data: Mapping | None = None):
    object.__setattr__(self, "_data", dict(data or {}))

  def __getitem__(self, key):
    return self._data[key]

  def __iter__(self) -> Iterator:
    return iter(self._data)

  def __len__(self) -> int:
    return len(self._data)

  def __setattr__(self, name, value):
    raise AttributeError("FrozenMap is read-only")

  def __hash__(self) -> int:
    try:
      return hash(frozenset(self._data.items()))
    except TypeError:  # unhashable values (lists in meta)
      return hash(frozenset(self._data))

  def __reduce__(self):
    return (FrozenMap, (self._data,))

  def __repr__(self) -> str:
    return f"FrozenMap({self._data!r})"


@dataclasses.dataclass(frozen=True)
class Item:
  """One benchmark item.

  Attributes:
    id: unique within a benchmark file (e.g. "aqa_0000", "alme_00006").
    modality: "audio" or "image".
    media: absolute path of the audio or image file (readers resolve relative paths
      against the data file's directory or `media_root`); None for text-only items.
    question: the question text, without evidence.
    candidates: the closed label set, in benchmark order; scored as whole labels.
    answer: y_a, the media-supported answer; one of `candidates`.
    evidence: kind -> text, kinds among `EVIDENCE_KINDS`; empty for items without
      evidence (text-prior study).
    text_answer: y_t, the competing answer that the adversarial text supports (a
      candidate != answer); None where the benchmark does not give one (MMAU, or MCR-Bench
      multi-class tasks whose files omit it). Faithful-only items may still carry it as
      the competitor for margins (MC2 consistent split).
    task: sub-task name (e.g. "aqa", "vsc", "ser", "alme", "activity_recognition").
    benchmark: "mcr-bench", "alme", "mmau", "mc2", ...
    split: e.g. "dev" / "test"; None if unassigned.
    options: texts of lettered options when `candidates` are option letters (ALME:
      candidates ("A", "B"), options (text of A, text of B)); empty otherwise.
    meta: benchmark-specific extras (language, flip type, difficulty, ...).
  """
  id: str
  modality: Modality
  media: str | None
  question: str
  candidates: tuple[str, ...]
  answer: str
  evidence: Mapping[str, str] = dataclasses.field(default_factory=FrozenMap)
  text_answer: str | None = None
  task: str | None = None
  benchmark: str = ""
  split: str | None = None
  options: tuple[str, ...] = ()
  meta: Mapping[str, Any] = dataclasses.field(default_factory=FrozenMap)

  def __post_init__(self):
    if not isinstance(self.id, str) or not self.id:
      raise ItemError(self.id, "id must be a non-empty string")
    if isinstance(self.candidates, (list, tuple)):
      object.__setattr__(self, "candidates", tuple(self.candidates))
    if isinstance(self.options, (list, tuple)):
      object.__setattr__(self, "options", tuple(self.options))
    if isinstance(self.evidence, Mapping) and not isinstance(self.evidence, FrozenMap):
      object.__setattr__(self, "evidence", FrozenMap(self.evidence))
    if isinstance(self.meta, Mapping) and not isinstance(self.meta, FrozenMap):
      object.__setattr__(self, "meta", FrozenMap(self.meta))
    for problem in _problems(self):
      raise ItemError(self.id, problem)

  def __hash__(self) -> int:
    return hash((self.benchmark, self.id, self.split))

  @property
  def is_conflict(self) -> bool:
    """True for items with adversarial evidence (the conflict population)."""
    return "adversarial" in self.evidence


def _is_str_tuple(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(s, str) for s in x)


def _problems(it: Item) -> Iterator[str]:
  """Schema violations of `it`, most basic first."""
  if it.modality not in MODALITIES:
    yield f"modality must be one of {MODALITIES}, got {it.modality!r}"
  if it.media is not None and (not isinstance(it.media, str) or not it.media):
    yield f"media must be a non-empty path string or None, got {it.media!r}"
  if not isinstance(it.question, str) or not it.question.strip():
    yield f"question must be a non-empty string, got {it.question!r}"
  if not _is_str_tuple(it.candidates):
    yield f"candidates must be a list of strings, got {it.candidates!r}"
    return
  if len(it.candidates) < 2:
    yield f"needs at least 2 candidates, got {it.candidates!r}"
  if any(not c.strip() for c in it.candidates):
    yield f"candidates must be non-empty strings, got {it.candidates!r}"
  if len(set(it.candidates)) != len(it.candidates):
    yield f"duplicate candidates in {it.candidates!r}"
  if not isinstance(it.answer, str):
    yield f"answer must be a string, got {it.answer!r}"
  elif it.answer not in it.candidates:
    yield f"answer {it.answer!r} is not among candidates {it.candidates!r}"
  if it.text_answer is not None:
    if not isinstance(it.text_answer, str) or it.text_answer not in it.candidates:
      yield f"text_answer {it.text_answer!r} is not among candidates {it.candidates!r}"
    elif it.text_answer == it.answer:
      yield f"text_answer {it.text_answer!r} equals the answer; adversarial evidence must support another candidate"
  if not isinstance(it.evidence, Mapping):
    yield f"evidence must be a mapping, got {type(it.evidence).__name__}"
  else:
    for kind, text in it.evidence.items():
      if kind == "neutral":
        yield "evidence kind 'neutral' is not evidence (it is the same-audio branch); leave it out"
      elif kind not in EVIDENCE_KINDS:
        yield f"unknown evidence kind {kind!r}; expected one of {EVIDENCE_KINDS}"
      elif not isinstance(text, str) or not text.strip():
        yield f"evidence {kind!r} must be a non-empty string, got {text!r}"
  if it.task is not None and not isinstance(it.task, str):
    yield f"task must be a string or None, got {it.task!r}"
  if not isinstance(it.benchmark, str):
    yield f"benchmark must be a string, got {it.benchmark!r}"
  if it.split is not None and not isinstance(it.split, str):
    yield f"split must be a string or None, got {it.split!r}"
  if not _is_str_tuple(it.options):
    yield f"options must be a list of strings, got {it.options!r}"
  elif it.options and len(it.options) != len(it.candidates):
    yield f"{len(it.options)} options for {len(it.candidates)} candidates"
  if not isinstance(it.meta, Mapping):
    yield f"meta must be a mapping, got {type(it.meta).__name__}"
