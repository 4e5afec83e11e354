"""Rotary position embeddings (half rotation, as HF Llama/Qwen2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def inv_frequencies(head_dim: int, theta: float) -> jax.Array:
  """[head_dim // 2] float32 inverse frequencies theta ** (-2i / d)."""
  return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """positions [B, S] int -> (cos, sin) each [B, S, head_dim] float32."""
  freqs = positions.astype(jnp.float32)[..., None] * inv_frequencies(head_dim, theta)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [B, S, N, D] rotated by cos/sin [B, S, D] (cast to x's dtype, as HF does)."""
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin
