"""Scaled dot-product attention with grouped-query heads and boolean masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float = 1.0) -> jax.Array:
  """Softmax attention in float32.

  Args:
    q: [B, S, N, D] queries.
    k, v: [B, T, K, D] keys and values, N a multiple of K (grouped-query attention).
    mask: [B, S, T] or broadcastable; True where query s may attend to key t.
    scale: multiplies the scores (1.0 when the queries are pre-scaled).
  Returns:
    [B, S, N, D] in q's dtype.
  """
  b, s, n, d = q.shape
  groups = n // k.shape[2]
  q = q.reshape(b, s, k.shape[2], groups, d)
  scores = jnp.einsum("bskgd,btkd->bkgst", q, k.astype(q.dtype)) * jnp.asarray(scale, q.dtype)
  scores = scores.astype(jnp.float32)
  scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
  out = jnp.einsum("bkgst,btkd->bskgd", probs, v.astype(q.dtype))
  return out.reshape(b, s, n, d)
