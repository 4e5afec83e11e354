"""Dense, norms and activations over plain parameter dicts (HF naming: kernel, bias, scale)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dense(p: dict, x: jax.Array) -> jax.Array:
  """x [..., in] @ p["kernel"] [in, out] (+ p["bias"] [out] when present)."""
  y = jnp.einsum("...i,io->...o", x, p["kernel"].astype(x.dtype))
  if "bias" in p:
    y = y + p["bias"].astype(x.dtype)
  return y


def rms_norm(p: dict, x: jax.Array, eps: float) -> jax.Array:
  """RMSNorm computed in float32, scaled in the input dtype (as HF Qwen2/Llama)."""
  dtype = x.dtype
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return p["scale"].astype(dtype) * x32.astype(dtype)


def layer_norm(p: dict, x: jax.Array, eps: float) -> jax.Array:
  """LayerNorm with scale and bias, statistics in float32."""
  dtype = x.dtype
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  y = (x32 - mean) * jax.lax.rsqrt(var + eps)
  y = y * p["scale"].astype(jnp.float32) + p["bias"].astype(jnp.float32)
  return y.astype(dtype)


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU."""
  return jax.nn.gelu(x, approximate=False)
