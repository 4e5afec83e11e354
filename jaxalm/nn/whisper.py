"""Whisper-style audio encoder (Whisper, Qwen2-Audio, AudioFlamingo3, Voxtral, Omni).

Front end gelu(conv1 k3 s1 p1) -> gelu(conv2 k3 s2 p1) -> + positions, then pre-LayerNorm
layers with a key-padding mask, then a final LayerNorm. Families add their own pooling.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxalm.nn.attention import attention
from jaxalm.nn.basic import dense, gelu, layer_norm
from jaxalm.nn.params import ParamSpec, stacked
from jaxalm.nn.sites import LAYER_SITES, Sites, split_layer_patch
from jaxalm.nn.stack import run_layers


@dataclasses.dataclass(frozen=True)
class WhisperEncoderConfig:
  d_model: int
  num_layers: int
  num_heads: int
  ffn_dim: int
  num_mel_bins: int = 128
  max_source_positions: int = 1500
  layer_norm_eps: float = 1e-5
  scan_layers: bool = True

  @property
  def n_frames(self) -> int:
    """Mel frames per window (3000 for 30 s)."""
    return 2 * self.max_source_positions


def _ln(d, axis="audio_embed"):
  return {"scale": ParamSpec((d,), (axis,), "ones"), "bias": ParamSpec((d,), (axis,), "zeros")}


def _linear(d_in, d_out, axes, bias=True):
  p = {"kernel": ParamSpec((d_in, d_out), axes)}
  if bias:
    p["bias"] = ParamSpec((d_out,), axes[1:], "zeros")
  return p


def layer_spec(cfg: WhisperEncoderConfig) -> dict:
  d, f = cfg.d_model, cfg.ffn_dim
  return {
      "self_attn": {
          "q_proj": _linear(d, d, ("audio_embed", "audio_heads")),
          "k_proj": _linear(d, d, ("audio_embed", "audio_heads"), bias=False),
          "v_proj": _linear(d, d, ("audio_embed", "audio_heads")),
          "out_proj": _linear(d, d, ("audio_heads", "audio_embed")),
      },
      "self_attn_layer_norm": _ln(d),
      "fc1": _linear(d, f, ("audio_embed", "audio_mlp")),
      "fc2": _linear(f, d, ("audio_mlp", "audio_embed")),
      "final_layer_norm": _ln(d),
  }


def spec(cfg: WhisperEncoderConfig) -> dict:
  """Parameter specs of the encoder (HF `audio_tower` without family-specific pooling)."""
  d = cfg.d_model
  return {
      "conv1": {"kernel": ParamSpec((3, cfg.num_mel_bins, d), (None, None, "audio_embed")),
                "bias": ParamSpec((d,), ("audio_embed",), "zeros")},
      "conv2": {"kernel": ParamSpec((3, d, d), (None, None, "audio_embed")),
                "bias": ParamSpec((d,), ("audio_embed",), "zeros")},
      "embed_positions": {"embedding": ParamSpec((cfg.max_source_positions, d), (None, "audio_embed"))},
      "layers": stacked(layer_spec(cfg), cfg.num_layers),
      "layer_norm": _ln(d),
  }


def conv1d(p: dict, x: jax.Array, stride: int) -> jax.Array:
  """x [A, T, C_in], kernel [3, C_in, C_out], padding 1 -> [A, T // stride, C_out]."""
  y = jax.lax.conv_general_dilated(
      x, p["kernel"].astype(x.dtype), window_strides=(stride,), padding=((1, 1),),
      dimension_numbers=("NWC", "WIO", "NWC"))
  return y + p["bias"].astype(x.dtype)


def conv_lengths(n_mel_frames: jax.Array) -> jax.Array:
  """Valid frames after the stride-2 conv: (L - 1) // 2 + 1."""
  return (n_mel_frames - 1) // 2 + 1


def _layer(cfg: WhisperEncoderConfig, capture, mask):
  n = cfg.num_heads
  d = cfg.d_model // n

  def fn(x, xs):
    p, patch = xs
    sites = Sites(capture, patch)
    a_, t, _ = x.shape
    a = p["self_attn"]
    h = layer_norm(p["self_attn_layer_norm"], x, cfg.layer_norm_eps)
    q = (dense(a["q_proj"], h) * jnp.asarray(d ** -0.5, h.dtype)).reshape(a_, t, n, d)
    k = dense(a["k_proj"], h).reshape(a_, t, n, d)
    v = dense(a["v_proj"], h).reshape(a_, t, n, d)
    o = attention(q, k, v, mask, scale=1.0)
    x = x + dense(a["out_proj"], o.reshape(a_, t, n * d))
    h = layer_norm(p["final_layer_norm"], x, cfg.layer_norm_eps)
    x = x + dense(p["fc2"], gelu(dense(p["fc1"], h)))
    x = sites.apply("audio.resid_post", x)
    return x, sites.captured

  return fn


def encode(params: dict, cfg: WhisperEncoderConfig, input_features: jax.Array, n_mel_frames: jax.Array,
           *, capture=(), patch=None, dtype=None):
  """Encoder layers over log-mel windows.

  Args:
    params: the encoder's parameters (`audio_tower`).
    input_features: [A, n_mels, 2 * max_source_positions] log-mel windows (HF layout).
    n_mel_frames: [A] valid mel frames per window (feature_attention_mask.sum(-1)).
    capture, patch: `audio.embeds` and `audio.resid_post` sites.
  Returns:
    (hidden [A, max_source_positions, D] after the last layer, before the final
    LayerNorm, which families apply before or after their pooling; captures).
  """
  dtype = dtype or params["conv1"]["kernel"].dtype
  x = jnp.swapaxes(input_features, 1, 2).astype(dtype)
  x = gelu(conv1d(params["conv1"], x, 1))
  x = gelu(conv1d(params["conv2"], x, 2))
  x = x + params["embed_positions"]["embedding"].astype(dtype)
  sites = Sites(capture, patch)
  x = sites.apply("audio.embeds", x)
  t = x.shape[1]
  key_valid = jnp.arange(t)[None, :] < conv_lengths(n_mel_frames)[:, None]
  mask = jnp.broadcast_to(key_valid[:, None, :], (x.shape[0], t, t))
  layer_capture = tuple(c for c in capture if c in LAYER_SITES["audio"])
  fn = _layer(cfg, layer_capture, mask)
  x, captured = run_layers(fn, x, (params["layers"], split_layer_patch(patch, "audio")), scan=cfg.scan_layers)
  return x, {**captured, **sites.captured}


def final_norm(params: dict, cfg: WhisperEncoderConfig, x: jax.Array) -> jax.Array:
  """The encoder's final LayerNorm (`layer_norm`)."""
  return layer_norm(params["layer_norm"], x, cfg.layer_norm_eps)
