"""Greedy generation with a kv cache, jittable end to end."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxalm.nn.kv_cache import init_cache


@functools.partial(jax.jit, static_argnames=("forward", "max_new_tokens", "cache_layout"))
def _greedy(params, inputs, *, forward, max_new_tokens, cache_layout, eos_token_id, pad_token_id):
  ids = inputs["input_ids"]
  b, s = ids.shape
  mask = inputs.get("attention_mask", jnp.ones_like(ids)).astype(jnp.int32)
  layers, kv_heads, head_dim, dtype = cache_layout
  cache = init_cache(layers, b, s + max_new_tokens, kv_heads, head_dim, jnp.dtype(dtype))
  out = forward(params, **inputs, cache=cache)
  last = jnp.sum(mask, axis=1) - 1
  logits = jnp.take_along_axis(out.logits, last[:, None, None], axis=1)[:, 0]

  def step(carry, _):
    cache, logits, done = carry
    token = jnp.where(done, pad_token_id, jnp.argmax(logits, axis=-1).astype(ids.dtype))
    done = done | (token == eos_token_id)
    step_out = forward(params, input_ids=token[:, None], attention_mask=jnp.ones((b, 1), jnp.int32), cache=cache)
    return (step_out.cache, step_out.logits[:, 0], done), token

  _, tokens = jax.lax.scan(step, (out.cache, logits, jnp.zeros((b,), bool)), None, length=max_new_tokens)
  return tokens.T


def generate(model, inputs: dict, max_new_tokens: int = 32, eos_token_id: int | None = None,
             pad_token_id: int | None = None, params=None) -> jax.Array:
  """Greedy decoding.

  Args:
    model: a `jaxalm.Model`.
    inputs: HF-named inputs (right or left padded; positions ignore padding).
    max_new_tokens: number of decoding steps.
    eos_token_id: stop token (rows that produced it are padded with `pad_token_id` after).
  Returns:
    [B, max_new_tokens] generated token ids.
  """
  cfg = model.config.text
  params = model.params if params is None else params
  dtype = jax.tree.leaves(params)[0].dtype
  eos = -1 if eos_token_id is None else eos_token_id
  pad = eos if pad_token_id is None else pad_token_id
  inputs = {k: jnp.asarray(v) for k, v in inputs.items() if v is not None}
  return _greedy(params, inputs, forward=model.forward, max_new_tokens=max_new_tokens,
                 cache_layout=(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, str(jnp.dtype(dtype))),
                 eos_token_id=eos, pad_token_id=pad)
