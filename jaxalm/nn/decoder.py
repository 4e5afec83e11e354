"""The decoder stack shared by every family: pre-RMSNorm, GQA with RoPE, SwiGLU MLP.

Variants are config fields, not subclasses: Qwen2 (q/k/v biases), Llama/Mistral
(`attention_bias=False`, explicit `head_dim`), Qwen3 (`qk_norm=True`), multimodal RoPE over
3D positions (`mrope_section`, `mrope_interleaved`), DeepStack (Qwen3-VL: per-layer visual
features added to the residual stream after the first layers, the `deepstack` argument).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxalm.nn import kv_cache
from jaxalm.nn.attention import attention
from jaxalm.nn.basic import dense, rms_norm
from jaxalm.nn.params import ParamSpec, stacked
from jaxalm.nn.rope import apply_rope, mrope_cos_sin, rope_cos_sin
from jaxalm.nn.sites import LAYER_SITES, Sites, split_layer_patch
from jaxalm.nn.stack import run_layers


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float
  rms_norm_eps: float
  attention_bias: bool = True
  qk_norm: bool = False
  tie_word_embeddings: bool = False
  scan_layers: bool = True
  mrope_section: tuple[int, int, int] | None = None  # (T, H, W) frequency split; 3D positions need it
  mrope_interleaved: bool = False


def _linear(d_in, d_out, axes, bias):
  p = {"kernel": ParamSpec((d_in, d_out), axes)}
  if bias:
    p["bias"] = ParamSpec((d_out,), axes[1:], "zeros")
  return p


def layer_spec(cfg: DecoderConfig) -> dict:
  h, n, k, d, f = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
  attn = {
      "q_proj": _linear(h, n * d, ("embed", "heads"), cfg.attention_bias),
      "k_proj": _linear(h, k * d, ("embed", "kv_heads"), cfg.attention_bias),
      "v_proj": _linear(h, k * d, ("embed", "kv_heads"), cfg.attention_bias),
      "o_proj": _linear(n * d, h, ("heads", "embed"), False),
  }
  if cfg.qk_norm:
    attn["q_norm"] = {"scale": ParamSpec((d,), (None,), "ones")}
    attn["k_norm"] = {"scale": ParamSpec((d,), (None,), "ones")}
  return {
      "self_attn": attn,
      "mlp": {
          "gate_proj": _linear(h, f, ("embed", "mlp"), False),
          "up_proj": _linear(h, f, ("embed", "mlp"), False),
          "down_proj": _linear(f, h, ("mlp", "embed"), False),
      },
      "input_layernorm": {"scale": ParamSpec((h,), ("embed",), "ones")},
      "post_attention_layernorm": {"scale": ParamSpec((h,), ("embed",), "ones")},
  }


def spec(cfg: DecoderConfig) -> dict:
  """Parameter specs of the decoder (`language_model`) and, unless tied, `lm_head`."""
  out = {
      "language_model": {
          "embed_tokens": {"embedding": ParamSpec((cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"))},
          "layers": stacked(layer_spec(cfg), cfg.num_layers),
          "norm": {"scale": ParamSpec((cfg.hidden_size,), ("embed",), "ones")},
      }
  }
  if not cfg.tie_word_embeddings:
    out["lm_head"] = {"kernel": ParamSpec((cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"))}
  return out


def embed(params: dict, input_ids: jax.Array) -> jax.Array:
  """input_ids [B, S] -> [B, S, H]."""
  return jnp.take(params["language_model"]["embed_tokens"]["embedding"], input_ids, axis=0)


def lm_head(params: dict, x: jax.Array) -> jax.Array:
  """Final hidden [B, S, H] -> float32 logits [B, S, V]."""
  if "lm_head" in params:
    logits = dense(params["lm_head"], x)
  else:
    logits = jnp.einsum("bsh,vh->bsv", x, params["language_model"]["embed_tokens"]["embedding"].astype(x.dtype))
  return logits.astype(jnp.float32)


def default_positions(token_mask: jax.Array, cache: dict | None) -> jax.Array:
  """Position ids that padding never shifts: the count of real tokens before each one."""
  pos = jnp.cumsum(token_mask.astype(jnp.int32), axis=-1) - 1
  if cache is not None:
    pos = pos + jnp.sum(cache["valid"], axis=-1, dtype=jnp.int32)[:, None]
  return jnp.maximum(pos, 0)


def _layer(cfg: DecoderConfig, capture, cos, sin, mask, index, deepstack=None):
  n, k, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

  def fn(x, xs):
    p, patch, cache_kv = xs[:3]  # + the layer index when `deepstack` is given
    sites = Sites(capture, patch)
    b, s, _ = x.shape
    x = sites.apply("lm.resid_pre", x)
    h = rms_norm(p["input_layernorm"], x, cfg.rms_norm_eps)
    a = p["self_attn"]
    q = dense(a["q_proj"], h).reshape(b, s, n, d)
    kk = dense(a["k_proj"], h).reshape(b, s, k, d)
    v = dense(a["v_proj"], h).reshape(b, s, k, d)
    if cfg.qk_norm:
      q = rms_norm(a["q_norm"], q, cfg.rms_norm_eps)
      kk = rms_norm(a["k_norm"], kk, cfg.rms_norm_eps)
    q, kk = apply_rope(q, cos, sin), apply_rope(kk, cos, sin)
    if cache_kv is not None:
      cache_kv = kv_cache.write(*cache_kv, kk, v, index)
      kk, v = cache_kv
    o = attention(q, kk, v, mask, scale=d ** -0.5)
    o = sites.apply("lm.attn_out", dense(a["o_proj"], o.reshape(b, s, n * d)))
    x = x + o
    h = rms_norm(p["post_attention_layernorm"], x, cfg.rms_norm_eps)
    m = p["mlp"]
    f = jax.nn.silu(dense(m["gate_proj"], h)) * dense(m["up_proj"], h)
    f = sites.apply("lm.mlp_out", dense(m["down_proj"], f))
    x = x + f
    if deepstack is not None:
      # HF adds DeepStack features to the output of layers 0..K-1 (before the next layer).
      layer = xs[3]
      extra = jax.lax.dynamic_index_in_dim(deepstack, jnp.minimum(layer, deepstack.shape[0] - 1), keepdims=False)
      x = x + jnp.where(layer < deepstack.shape[0], extra, jnp.zeros_like(extra)).astype(x.dtype)
    x = sites.apply("lm.resid_post", x)
    return x, (sites.captured, cache_kv)

  return fn


def decode(params: dict, cfg: DecoderConfig, embeds: jax.Array, token_mask: jax.Array,
           positions: jax.Array, *, cache: dict | None = None, capture=(), patch=None,
           deepstack: jax.Array | None = None):
  """Runs the decoder layers and the final norm.

  Args:
    params: the full parameter tree (uses `language_model`).
    embeds: [B, S, H] input embeddings.
    token_mask: [B, S] bool, real tokens (False for padding).
    positions: [B, S] int position ids, or [3, B, S] (temporal, height, width) for MRoPE
      (needs `cfg.mrope_section`).
    cache: optional kv cache (see `jaxalm.nn.kv_cache`); the S new tokens are written at
      its `index` and attend to every valid earlier slot.
    capture: site names to capture (layered ones come back stacked [L, ...]).
    patch: {site: Patch}; layered sites have values [L, B, S, H] and masks [L, B, S].
    deepstack: optional [K, B, S, H] (K <= L), added to the residual stream after layer
      l < K (zero rows where nothing is added); `lm.resid_post` includes it.
  Returns:
    (hidden [B, S, H] after the final norm, captures dict, updated cache or None).
  """
  lm = params["language_model"]
  b, s, _ = embeds.shape
  if positions.ndim == 3:
    if cfg.mrope_section is None:
      raise ValueError("3D positions [3, B, S] need a DecoderConfig with mrope_section")
    cos, sin = mrope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, cfg.mrope_section, cfg.mrope_interleaved)
  else:
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
  layer_capture = tuple(c for c in capture if c in LAYER_SITES["lm"])
  layer_patch = split_layer_patch(patch, "lm")
  if cache is None:
    index = jnp.zeros((), jnp.int32)
    causal = jnp.tril(jnp.ones((s, s), bool))
    mask = token_mask[:, None, :] & causal[None]
    cache_xs = None
  else:
    index = cache["index"]
    valid = jax.lax.dynamic_update_slice_in_dim(cache["valid"], token_mask, index, axis=1)
    slots = jnp.arange(valid.shape[1])
    causal = slots[None, :] <= (index + jnp.arange(s))[:, None]
    mask = valid[:, None, :] & causal[None]
    cache_xs = (cache["k"], cache["v"])
  xs = (lm["layers"], layer_patch, cache_xs)
  if deepstack is not None:
    if deepstack.shape[0] > cfg.num_layers:
      raise ValueError(f"deepstack has {deepstack.shape[0]} layers of features, the decoder {cfg.num_layers} layers")
    xs = xs + (jnp.arange(cfg.num_layers),)
  fn = _layer(cfg, layer_capture, cos, sin, mask, index, deepstack)
  x, (captured, new_kv) = run_layers(fn, embeds, xs, scan=cfg.scan_layers)
  sites = Sites(capture, patch)
  x = sites.apply("lm.final", rms_norm(lm["norm"], x, cfg.rms_norm_eps))
  captured = {**captured, **sites.captured}
  new_cache = None
  if cache is not None:
    new_cache = {**cache, "k": new_kv[0], "v": new_kv[1], "valid": valid, "index": index + s}
  return x, captured, new_cache


def init_cache(cfg: DecoderConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
  """An empty kv cache for this decoder."""
  return kv_cache.init_cache(cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim, dtype)
