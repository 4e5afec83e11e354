"""Candidate log-likelihoods with shared prefixes, in one compiled call.

A scoring batch has `Np` prefixes (chat header + media block, one per distinct media input
of an item: the real audio, the perturbed audio, no audio, each fragment) and `R` rows
(one per branch x candidate). Each row holds the branch's text suffix followed by the
candidate label's tokens and names the prefix it continues. The prefixes run once (the
audio encoder included), their kv caches are gathered onto the rows, and the rows continue
from them; a candidate's score is the sum of its label tokens' log-probabilities.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxalm.nn.decoder import lm_head
from jaxalm.nn.kv_cache import init_cache, take_rows


def gather_cache(cache: dict, index: jax.Array) -> dict:
  """The cache rows `index` [R] of a cache (shared prefixes -> one row per continuation),
  extra per-row keys (e.g. Qwen3-VL's `rope_delta`) included."""
  return take_rows(cache, index)


def label_logprobs(params: Any, hidden: jax.Array, input_ids: jax.Array, label_start: jax.Array,
                   label_len: jax.Array, max_label_len: int) -> jax.Array:
  """Sum of log p(label token) over each row's label span.

  Args:
    hidden: [R, T, H] final hidden states of the rows.
    input_ids: [R, T] row tokens; the label occupies [label_start, label_start + label_len).
    label_start, label_len: [R]; label_start >= 1 (the token before the label predicts it).
    max_label_len: static bound on label_len.
  Returns:
    [R] float32 summed log-probabilities.
  """
  offsets = jnp.arange(max_label_len)
  at = jnp.clip(label_start[:, None] + offsets[None, :], 0, input_ids.shape[1] - 1)
  h = jnp.take_along_axis(hidden, (at - 1)[..., None], axis=1)
  logp = jax.nn.log_softmax(lm_head(params, h), axis=-1)
  tok = jnp.take_along_axis(input_ids, at, axis=1)
  lp = jnp.take_along_axis(logp, tok[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(offsets[None, :] < label_len[:, None], lp, 0.0), axis=-1)


@functools.partial(jax.jit, static_argnames=("forward", "cache_layout", "max_label_len"))
def score_rows(params: Any, prefix: dict, rows: dict, *, forward: Callable, cache_layout: tuple,
               max_label_len: int) -> jax.Array:
  """Scores every row of a batch in one call.

  Args:
    params: model parameters.
    prefix: HF-named inputs of the Np prefixes: input_ids / attention_mask [Np, P] (right
      padded) plus the media inputs (e.g. input_features [A, ...], feature_attention_mask).
    rows: input_ids / attention_mask [R, T] (branch suffix + label, right padded),
      prefix_index [R], label_start [R], label_len [R].
    forward: the family forward with its config bound (`Model.forward`).
    cache_layout: (layers, kv_heads, head_dim, dtype name).
    max_label_len: static bound on label lengths.
  Returns:
    [R] summed label log-probabilities.
  """
  layers, kv_heads, head_dim, dtype = cache_layout
  n_prefix, p = prefix["input_ids"].shape
  t = rows["input_ids"].shape[1]
  cache = init_cache(layers, n_prefix, p + t, kv_heads, head_dim, jnp.dtype(dtype))
  cache = forward(params, **prefix, cache=cache).cache
  out = forward(params, input_ids=rows["input_ids"], attention_mask=rows["attention_mask"],
                cache=gather_cache(cache, rows["prefix_index"]), capture=("lm.final",))
  return label_logprobs(params, out.captures["lm.final"], rows["input_ids"], rows["label_start"],
                        rows["label_len"], max_label_len)


def score_full(params: Any, inputs: dict, label_start: jax.Array, label_len: jax.Array, *, forward: Callable,
               max_label_len: int) -> jax.Array:
  """Reference path: one full forward per whole prompt + label (no shared prefix)."""
  out = forward(params, **inputs, capture=("lm.final",))
  return label_logprobs(params, out.captures["lm.final"], inputs["input_ids"], label_start, label_len, max_label_len)
