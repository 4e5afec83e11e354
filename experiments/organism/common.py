"""Prompt encoding, closed-set candidate scoring and [ARB] diagnostics for the organism.

Scoring convention (science.md section 2): the prompt is the Qwen2-Audio chat layout of
`jaxalm.prompts` with the [ARB] text (`tasks.prompt_text`), one `<|AUDIO|>` per pooled
audio frame, ending with "<|im_start|>assistant\\n". A candidate's tokens are
`tokenizer(label, add_special_tokens=False)` appended right after it (no space, no
`<|im_end|>`); s(y) is the sum of their teacher-forced log-probs and z = log_softmax(s)
over the candidate set.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.organism import tasks
from jaxalm import prompts

BRANCHES = ("neutral", "faithful", "adversarial")  # A, F, J


@dataclasses.dataclass
class Encoder:
  """Turns items into HF-named model inputs (right-padded, static shapes)."""
  tokenizer: object
  feature_extractor: object
  model_type: str = "qwen2_audio"

  def __post_init__(self):
    self.layout = prompts.layout(self.model_type)
    self.pad_id = self.tokenizer.pad_token_id
    self._prefix = functools.lru_cache(maxsize=None)(self._prefix_ids)
    self._suffix = functools.lru_cache(maxsize=None)(self._suffix_ids)
    self._label = functools.lru_cache(maxsize=None)(
        lambda y: tuple(self.tokenizer(y, add_special_tokens=False)["input_ids"]))

  def _prefix_ids(self, n_audio: int) -> tuple[int, ...]:
    p, _ = prompts.split_tokens(self.tokenizer, self.layout.prefix(n_audio), self.layout.suffix("x"))
    return tuple(p)

  def _suffix_ids(self, n_audio: int, text: str) -> tuple[int, ...]:
    _, s = prompts.split_tokens(self.tokenizer, self.layout.prefix(n_audio), self.layout.suffix(text))
    return tuple(s)

  def audio(self, items) -> dict:
    """{input_features [N, 128, T] f32, feature_attention_mask [N, T] i32, n_audio [N]}."""
    out = self.feature_extractor([it.waveform for it in items], sampling_rate=tasks.SAMPLING_RATE,
                                 padding="max_length", return_attention_mask=True, return_tensors="np")
    mask = out["attention_mask"].astype(np.int32)
    n_frames = mask.sum(-1)
    n_audio = (((n_frames - 1) // 2 + 1) - 2) // 2 + 1
    return {"input_features": out["input_features"].astype(np.float32), "feature_attention_mask": mask,
            "n_audio": n_audio.astype(np.int32)}

  def prompt(self, n_audio: int, text: str) -> tuple[int, ...]:
    return self._prefix(int(n_audio)) + self._suffix(int(n_audio), text)

  def label(self, y: str) -> tuple[int, ...]:
    ids = self._label(y)
    if not ids:
      raise ValueError(f"label {y!r} has no tokens")
    return ids

  def rows(self, seqs, seq_len: int) -> dict:
    """Right-padded token rows from (prompt ids, continuation ids) pairs.

    Returns input_ids, attention_mask [R, S]; targets [R, S] = the next token where it is
    a continuation token, else -1; last [R] = index of the last prompt token.
    """
    r = len(seqs)
    ids = np.full((r, seq_len), self.pad_id, np.int32)
    targets = np.full((r, seq_len), -1, np.int32)
    mask = np.zeros((r, seq_len), np.int32)
    last = np.zeros((r,), np.int32)
    for i, (p, c) in enumerate(seqs):
      n = len(p) + len(c)
      if n > seq_len:
        raise ValueError(f"row of {n} tokens exceeds seq_len {seq_len}")
      ids[i, :n] = p + c
      mask[i, :n] = 1
      targets[i, len(p) - 1:n - 1] = c
      last[i] = len(p) - 1
    return {"input_ids": ids, "attention_mask": mask, "targets": targets, "last": last}


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log p(target) per position [R, S] (0 where target is -1)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  got = jnp.take_along_axis(logp, jnp.maximum(targets, 0)[..., None], axis=-1)[..., 0]
  return jnp.where(targets >= 0, got, 0.0)


@functools.partial(jax.jit, static_argnames=("forward",))
def _scores(params, batch, cand_ids, *, forward):
  """Shared-row path: log p(first token) of each candidate at the last prompt position [R, C]."""
  logits = forward(params, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   input_features=batch["input_features"],
                   feature_attention_mask=batch["feature_attention_mask"]).logits
  logp = jax.nn.log_softmax(logits[jnp.arange(logits.shape[0]), batch["last"]], axis=-1)
  return jnp.take_along_axis(logp, jnp.maximum(cand_ids, 0), axis=-1)


@functools.partial(jax.jit, static_argnames=("forward",))
def _seq_scores(params, batch, *, forward):
  """Per-candidate-row path: summed log-probs of the continuation [R]."""
  logits = forward(params, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   input_features=batch["input_features"],
                   feature_attention_mask=batch["feature_attention_mask"]).logits
  return token_logprobs(logits, batch["targets"]).sum(-1)


def candidate_scores(forward, params, enc: Encoder, items, branches=BRANCHES, *, audio=None,
                     batch_size: int = 64, seq_len: int | None = None, per_candidate: bool | None = None):
  """Candidate log-softmax scores z [N, len(branches), C_max] (-inf past an item's candidates).

  Args:
    forward: `forward(params, input_ids=..., attention_mask=..., input_features=...,
      feature_attention_mask=...) -> Output` (e.g. `jaxalm.load(...).forward`); hashable.
    audio: `enc.audio(items)` if already computed.
    per_candidate: one row per (item, branch, candidate) (any label length); default only
      when some label is longer than one token, else one row per (item, branch).
  """
  audio = enc.audio(items) if audio is None else audio
  cmax = max(len(it.candidates) for it in items)
  labels = [[enc.label(y) for y in it.candidates] for it in items]
  if per_candidate is None:
    per_candidate = any(len(c) > 1 for ls in labels for c in ls)
  rows = []  # (item index, prompt ids, continuation ids, candidate slot)
  for i, it in enumerate(items):
    for b in branches:
      p = enc.prompt(audio["n_audio"][i], it.text(b))
      if per_candidate:
        rows += [(i, p, c, j) for j, c in enumerate(labels[i])]
      else:
        rows.append((i, p, (), None))
  if seq_len is None:
    seq_len = -(-max(len(p) + len(c) for _, p, c, _ in rows) // 8) * 8
  out = []
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    chunk = chunk + [chunk[0]] * (batch_size - len(chunk))
    idx = np.array([r[0] for r in chunk])
    batch = enc.rows([(r[1], r[2]) for r in chunk], seq_len)
    batch["input_features"] = audio["input_features"][idx]
    batch["feature_attention_mask"] = audio["feature_attention_mask"][idx]
    if per_candidate:
      del batch["last"]
      out.append(np.asarray(_seq_scores(params, batch, forward=forward)))
    else:
      cand = np.full((batch_size, cmax), -1, np.int32)
      for k, r in enumerate(chunk):
        cand[k, :len(labels[r[0]])] = [c[0] for c in labels[r[0]]]
      del batch["targets"]
      out.append(np.asarray(_scores(params, batch, cand, forward=forward)))
  flat = np.concatenate(out)[:len(rows)]
  s = np.full((len(items), len(branches), cmax), -np.inf, np.float32)
  if per_candidate:
    k = 0
    for i, it in enumerate(items):
      for b in range(len(branches)):
        n = len(it.candidates)
        s[i, b, :n] = flat[k:k + n]
        k += n
  else:
    flat = flat.reshape(len(items), len(branches), cmax)
    for i, it in enumerate(items):
      s[i, :, :len(it.candidates)] = flat[i, :, :len(it.candidates)]
  return np.asarray(jax.nn.log_softmax(jnp.asarray(s), axis=-1))


def diagnostics(z: np.ndarray, items, branches=BRANCHES) -> dict:
  """[ARB] section 3 rates (fractions, via `jaxalm.metrics`) from z [N, branches, C]; needs
  the neutral and adversarial branches (every item is a conflict item)."""
  from jaxalm import metrics

  ya = np.array([it.candidates.index(it.answer) for it in items])
  yt = np.array([it.candidates.index(it.text_answer) for it in items])
  z = {b: z[:, k] for k, b in enumerate(branches)}
  conflict = np.ones(len(items), bool)
  out = {"n": len(items), "same_audio_acc": metrics.audio_reference_accuracy(z["neutral"], ya) / 100}
  if "faithful" in z:
    out["faithful_acc"] = metrics.audio_reference_accuracy(z["faithful"], ya) / 100
  out["conflict_acc"] = metrics.conflict_accuracy(z["adversarial"], ya, conflict) / 100
  out["text_follow"] = metrics.text_follow(z["adversarial"], yt, conflict) / 100
  m_a, m_j = metrics.margins(z["neutral"], ya, yt), metrics.margins(z["adversarial"], ya, yt)
  out["repairable_rate"] = metrics.repairable_rate(m_a, m_j) / 100
  return out


def diagnostics_by_task(z: np.ndarray, items, branches=BRANCHES) -> dict:
  """`diagnostics` overall ("all") and per task."""
  out = {"all": diagnostics(z, items, branches)}
  for t in dict.fromkeys(it.task for it in items):
    sel = [i for i, it in enumerate(items) if it.task == t]
    out[t] = diagnostics(z[sel], [items[i] for i in sel], branches)
  return out
