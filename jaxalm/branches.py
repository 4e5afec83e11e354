"""Counterfactual branches of an item, planned as shared prefixes + continuation rows.

Branches (science.md section 1):
  joint        real audio, question + adversarial evidence
  faithful     real audio, question + faithful evidence
  irrelevant   real audio, question + irrelevant evidence
  same_audio   real audio, question only (the same-audio reference A)
  no_audio     no audio tokens at all, question only ([TP] "None")
  perturbed    real audio + Gaussian noise at `snr_db`, question + adversarial evidence (ACD)
  frag{N}_{k}  only chunk k of N equal contiguous chunks, question only ([TP] fragments)

Branches with the same audio share one prefix (chat header + audio block), which runs once.
"""

from __future__ import annotations

import dataclasses
import inspect
import zlib
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

from jaxalm import prompts
from jaxalm.data.schema import Item
from jaxalm.data.templates import branch_text
from jaxalm.scoring import score_rows

# branch -> (media kind, text branch)
BRANCHES: dict[str, tuple[str, str]] = {
    "joint": ("real", "joint"),
    "faithful": ("real", "faithful"),
    "irrelevant": ("real", "irrelevant"),
    "same_audio": ("real", "same_audio"),
    "no_audio": ("none", "no_audio"),
    "perturbed": ("perturbed", "joint"),
}
FRAGMENT_NS = (2, 3, 4, 5)


def fragment_branches(ns: Iterable[int] = FRAGMENT_NS) -> tuple[str, ...]:
  """The fragment branch names: frag2_1, frag2_2, frag3_1, ... (14 for N = 2..5)."""
  return tuple(f"frag{n}_{k}" for n in ns for k in range(1, n + 1))


def branch_media(branch: str) -> tuple[str, str]:
  """(media key, text branch) of a branch name."""
  if branch in BRANCHES:
    return BRANCHES[branch]
  if branch.startswith("frag"):
    n, k = (int(x) for x in branch[4:].split("_"))
    if not 1 <= k <= n:
      raise ValueError(f"bad fragment branch {branch!r}")
    return f"frag{n}_{k}", "same_audio"
  raise ValueError(f"unknown branch {branch!r}; known: {sorted(BRANCHES)} and frag<N>_<k>")


class BranchError(ValueError):
  """An item that cannot be turned into the requested branches."""


def _round_up(n: int, m: int) -> int:
  return max(m, -(-n // m) * m)


@dataclasses.dataclass
class _Plan:
  item: Item
  prefix_ids: list[list[int]]
  media: list[dict | None]
  rows: list[tuple[int, list[int], int, int]]  # (prefix slot, ids, label_start, label_len)
  branches: tuple[str, ...]


class Scorer:
  """Scores the candidates of every branch of items with a loaded model.

  Args:
    model: a `jaxalm.Model`.
    branches: branch names (see module docstring).
    batch_size: items per compiled call.
    snr_db: noise level of the perturbed branch.
    style: prompt style for `branch_text` (default per benchmark).
    load_media: path -> media (default: the family's `load_media`, else
      `jaxalm.audio.load_audio`).

  A family's `media_inputs(cfg, media[, processor])` gets the model's processor when it
  takes one (image families need the checkpoint's image processor).
  """

  def __init__(self, model, branches=("joint", "same_audio"), *, batch_size: int = 4, snr_db: float = 0.0,
               style: str | None = None, load_media: Callable | None = None, params=None):
    self.model = model
    self.params = model.params if params is None else params
    self.branches = tuple(branches)
    for b in self.branches:
      branch_media(b)
    self.batch_size = batch_size
    self.snr_db = snr_db
    self.style = style
    self.layout = prompts.layout(model.hf_config["model_type"])
    self.tokenizer = model.tokenizer
    self.modality = getattr(model.family, "MODALITY", "audio")
    if load_media is None:
      load_media = getattr(model.family, "load_media", None)
    if load_media is None:
      from jaxalm.audio import load_audio
      load_media = load_audio
    self.load_media = load_media
    media_inputs = getattr(model.family, "media_inputs", None)
    takes_processor = media_inputs is not None and "processor" in inspect.signature(media_inputs).parameters
    self._media_kwargs = {"processor": model.processor} if takes_processor else {}

  def _media(self, item: Item, waveform, key: str):
    from jaxalm import audio
    if key == "none":
      return None
    if key == "real":
      return waveform
    if self.modality != "audio":
      raise BranchError(f"item {item.id!r}: branch media {key!r} needs audio; the model takes {self.modality}")
    if key == "perturbed":
      return audio.perturb(waveform, snr_db=self.snr_db, seed=zlib.crc32(item.id.encode()))
    n, k = (int(x) for x in key[4:].split("_"))
    try:
      return audio.fragments(waveform, n)[k - 1]
    except ValueError as e:
      raise BranchError(f"item {item.id!r}: {e}") from e

  def _tokens(self, text: str) -> list[int]:
    return self.tokenizer(text, add_special_tokens=False)["input_ids"]

  def plan(self, item: Item, waveform=None, branches: tuple[str, ...] | None = None) -> _Plan:
    """Tokenised prefixes and rows of one item (host side), for `branches` (default: the
    scorer's)."""
    branches = self.branches if branches is None else tuple(branches)
    if waveform is None and any(branch_media(b)[0] != "none" for b in branches):
      if item.media is None:
        raise BranchError(f"item {item.id!r} has no media file")
      waveform = self.load_media(item.media)
    family, cfg = self.model.family, self.model.config
    slots: dict[str, int] = {}
    prefix_ids, media, rows = [], [], []
    for branch in branches:
      key, text_branch = branch_media(branch)
      if key not in slots:
        m = self._media(item, waveform, key)
        if m is None:
          prefix_ids.append(self._tokens(self.layout.prefix(None)))
          media.append(None)
        else:
          inputs, n_tokens = family.media_inputs(cfg, m, **self._media_kwargs)
          prefix_ids.append(self._tokens(self.layout.prefix(n_tokens)))
          media.append(inputs)
        slots[key] = len(prefix_ids) - 1
      try:
        text = branch_text(item, text_branch, style=self.style)
      except ValueError as e:
        raise BranchError(str(e)) from e
      prefix_text = self.layout.prefix(None if media[slots[key]] is None else 1)
      suffix = self.layout.suffix(text, with_media=media[slots[key]] is not None)
      _, suffix_ids = prompts.split_tokens(self.tokenizer, prefix_text, suffix)
      for cand in item.candidates:
        ids = self._tokens(suffix + cand)
        if ids[:len(suffix_ids)] != suffix_ids or len(ids) == len(suffix_ids):
          raise BranchError(f"item {item.id!r}: candidate {cand!r} does not tokenise as a continuation "
                            f"of the prompt")
        rows.append((slots[key], ids, len(suffix_ids), len(ids) - len(suffix_ids)))
    return _Plan(item, prefix_ids, media, rows, branches)

  def collate(self, plans: list[_Plan]) -> tuple[dict, dict, int]:
    """Pads a list of plans into the arrays of `score_rows`."""
    family = self.model.family
    pad = self.tokenizer.pad_token_id or 0
    prefixes = [(p, m) for plan in plans for p, m in zip(plan.prefix_ids, plan.media)]
    n_p = _round_up(max(len(p) for p, _ in prefixes), 32)
    prefix = {"input_ids": np.full((len(prefixes), n_p), pad, np.int32),
              "attention_mask": np.zeros((len(prefixes), n_p), np.int32)}
    for i, (ids, _) in enumerate(prefixes):
      prefix["input_ids"][i, :len(ids)] = ids
      prefix["attention_mask"][i, :len(ids)] = 1
    media = [m for _, m in prefixes if m is not None]
    if media:
      prefix.update(family.collate_media(media))
    offsets = np.cumsum([0] + [len(plan.prefix_ids) for plan in plans])
    rows = [(offsets[j] + slot, ids, start, n) for j, plan in enumerate(plans) for slot, ids, start, n in plan.rows]
    n_t = _round_up(max(len(ids) for _, ids, _, _ in rows), 16)
    out = {"input_ids": np.full((len(rows), n_t), pad, np.int32), "attention_mask": np.zeros((len(rows), n_t), np.int32),
           "prefix_index": np.array([r[0] for r in rows], np.int32),
           "label_start": np.array([r[2] for r in rows], np.int32), "label_len": np.array([r[3] for r in rows], np.int32)}
    for i, (_, ids, _, _) in enumerate(rows):
      out["input_ids"][i, :len(ids)] = ids
      out["attention_mask"][i, :len(ids)] = 1
    return prefix, out, _round_up(int(out["label_len"].max()), 4)

  def score_plans(self, plans: list[_Plan]) -> list[dict[str, np.ndarray]]:
    """{branch: [C] raw candidate log-probabilities} per plan, in one compiled call."""
    prefix, rows, max_label = self.collate(plans)
    cfg = self.model.config.text
    dtype = str(jax.tree.leaves(self.params)[0].dtype)
    scores = np.asarray(score_rows(self.params, prefix, rows, forward=self.model.forward,
                                   cache_layout=(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, dtype),
                                   max_label_len=max_label))
    out, r = [], 0
    for plan in plans:
      c = len(plan.item.candidates)
      per = {}
      for branch in plan.branches:
        per[branch] = scores[r:r + c].astype(np.float64)
        r += c
      out.append(per)
    return out

  def score(self, items: Iterable[Item], on_error: str = "raise",
            skipped: list | None = None) -> Iterator[tuple[Item, dict[str, np.ndarray]]]:
    """Yields (item, {branch: [C] scores}) in order, `batch_size` items per call.

    With on_error="skip", items that cannot be planned (unreadable audio, missing evidence,
    too short to fragment) are appended to `skipped` as (id, reason) and left out.
    """
    batch: list[_Plan] = []
    for item in items:
      try:
        batch.append(self.plan(item))
      except (BranchError, ValueError, OSError) as e:
        if on_error != "skip":
          raise
        if skipped is not None:
          skipped.append((item.id, str(e)))
        continue
      if len(batch) == self.batch_size:
        yield from zip([p.item for p in batch], self.score_plans(batch))
        batch = []
    if batch:
      yield from zip([p.item for p in batch], self.score_plans(batch))
