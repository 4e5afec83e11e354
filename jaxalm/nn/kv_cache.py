"""Key/value cache for incremental decoding and shared-prefix branches.

A cache is a dict pytree:
  k, v   [L, B, T, K, D]  keys/values of every layer for T slots
  valid  [B, T] bool      slots holding a real (non-padding) token
  index  [] int32         the next slot to write
Families may add per-row keys with the batch on axis 0 (e.g. Qwen3-VL's `rope_delta` [B]);
the helpers here and the decoder carry them along.
New tokens are written at slots index .. index+S-1 for every batch row; rows whose prompts
were shorter carry invalid (padding) slots, which attention skips, so right-padded batches
and prefixes of different lengths continue correctly when position ids are given explicitly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init_cache(num_layers: int, batch: int, max_len: int, num_kv_heads: int, head_dim: int,
               dtype=jnp.float32) -> dict:
  """An empty cache with `max_len` slots."""
  shape = (num_layers, batch, max_len, num_kv_heads, head_dim)
  return {
      "k": jnp.zeros(shape, dtype),
      "v": jnp.zeros(shape, dtype),
      "valid": jnp.zeros((batch, max_len), bool),
      "index": jnp.zeros((), jnp.int32),
  }


def take_rows(cache: dict, index: jax.Array) -> dict:
  """The batch rows `index` [R] of a cache (e.g. shared prefixes -> one row per continuation)."""
  return {key: _rows(key, x, lambda a, axis: jnp.take(a, index, axis=axis)) for key, x in cache.items()}


def repeat_cache(cache: dict, repeats: int) -> dict:
  """Repeats every batch row `repeats` times (row-major: item0 x repeats, item1 x repeats)."""
  return {key: _rows(key, x, lambda a, axis: jnp.repeat(a, repeats, axis=axis)) for key, x in cache.items()}


def _rows(key: str, x: jax.Array, fn):
  if key == "index":
    return x
  return fn(x, 1 if key in ("k", "v") else 0)


def write(cache_k: jax.Array, cache_v: jax.Array, k: jax.Array, v: jax.Array, index: jax.Array):
  """Writes k, v [B, S, K, D] into one layer's cache [B, T, K, D] at slot `index`."""
  cache_k = jax.lax.dynamic_update_slice_in_dim(cache_k, k.astype(cache_k.dtype), index, axis=1)
  cache_v = jax.lax.dynamic_update_slice_in_dim(cache_v, v.astype(cache_v.dtype), index, axis=1)
  return cache_k, cache_v
