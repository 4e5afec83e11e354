"""Rotary position embeddings (half rotation, as HF Llama/Qwen2), and multimodal RoPE (MRoPE)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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


def mrope_axes(head_dim: int, section: tuple[int, int, int], interleaved: bool) -> np.ndarray:
  """[head_dim // 2] ints in {0, 1, 2}: which position row (T, H, W) drives each frequency.

  Interleaved (Qwen3-VL): slot j is H when j % 3 == 1 and j < 3 * section[1], W when
  j % 3 == 2 and j < 3 * section[2], else T. Contiguous (Qwen2-VL, Qwen2.5): the first
  section[0] slots T, the next section[1] H, the last section[2] W.
  """
  j = np.arange(head_dim // 2)
  if interleaved:
    h = (j % 3 == 1) & (j < 3 * section[1])
    w = (j % 3 == 2) & (j < 3 * section[2])
    return np.where(h, 1, np.where(w, 2, 0))
  if sum(section) != head_dim // 2:
    raise ValueError(f"mrope_section {tuple(section)} must sum to head_dim // 2 = {head_dim // 2}")
  return np.repeat(np.arange(3), section)


def mrope_cos_sin(positions: jax.Array, head_dim: int, theta: float, section: tuple[int, int, int],
                  interleaved: bool = True) -> tuple[jax.Array, jax.Array]:
  """Multimodal RoPE: positions [3, B, S] (temporal, height, width) -> (cos, sin) each
  [B, S, head_dim] float32, every frequency taking its angle from one row (see `mrope_axes`)."""
  freqs = positions.astype(jnp.float32)[..., None] * inv_frequencies(head_dim, theta)
  axes = mrope_axes(head_dim, section, interleaved)
  freqs = jnp.where(axes == 1, freqs[1], jnp.where(axes == 2, freqs[2], freqs[0]))
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)
