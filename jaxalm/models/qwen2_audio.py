"""Qwen2-Audio: Whisper encoder -> AvgPool(2) -> LayerNorm -> Linear -> Qwen2 decoder.

Audio features are scattered into the `<|AUDIO|>` positions of `input_ids` (expanded by
the processor: one token per pooled frame) with a fixed-size scatter, so shapes stay static.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxalm.models.output import Output
from jaxalm.nn import decoder, whisper
from jaxalm.nn.basic import dense
from jaxalm.nn.decoder import DecoderConfig
from jaxalm.nn.params import ParamSpec
from jaxalm.nn.sites import Sites, check_sites
from jaxalm.nn.whisper import WhisperEncoderConfig

MODEL_TYPE = "qwen2_audio"


class ConfigError(ValueError):
  """A HF config this implementation cannot run faithfully."""


@dataclasses.dataclass(frozen=True)
class Qwen2AudioConfig:
  audio: WhisperEncoderConfig
  text: DecoderConfig
  audio_token_id: int

  @classmethod
  def from_hf(cls, hf: dict[str, Any]) -> "Qwen2AudioConfig":
    """From a HF `config.json` dict (refuses settings this implementation does not run)."""
    a, t = hf["audio_config"], hf["text_config"]
    _require(a, "activation_function", "gelu")
    _require(a, "scale_embedding", False)
    _require(t, "hidden_act", "silu")
    if t.get("use_sliding_window"):
      raise ConfigError("text_config.use_sliding_window=True is not supported")
    rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
      raise ConfigError(f"text_config rope_type {rope_type!r} is not supported (only 'default')")
    theta = rope.get("rope_theta", t.get("rope_theta", 10000.0))
    heads = t["num_attention_heads"]
    audio = WhisperEncoderConfig(
        d_model=a["d_model"], num_layers=a["encoder_layers"], num_heads=a["encoder_attention_heads"],
        ffn_dim=a["encoder_ffn_dim"], num_mel_bins=a["num_mel_bins"],
        max_source_positions=a["max_source_positions"])
    text = DecoderConfig(
        vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
        num_layers=t["num_hidden_layers"], num_heads=heads,
        num_kv_heads=t.get("num_key_value_heads") or heads,
        head_dim=t.get("head_dim") or t["hidden_size"] // heads,
        rope_theta=float(theta), rms_norm_eps=t["rms_norm_eps"], attention_bias=True,
        tie_word_embeddings=bool(t.get("tie_word_embeddings", hf.get("tie_word_embeddings", False))))
    token = hf.get("audio_token_id", hf.get("audio_token_index"))
    if token is None:
      raise ConfigError("config has neither audio_token_id nor audio_token_index")
    return cls(audio=audio, text=text, audio_token_id=int(token))

  def replace(self, *, scan_layers: bool) -> "Qwen2AudioConfig":
    """The same config with layers scanned or unrolled."""
    return dataclasses.replace(
        self, audio=dataclasses.replace(self.audio, scan_layers=scan_layers),
        text=dataclasses.replace(self.text, scan_layers=scan_layers))


def _require(section: dict, key: str, value) -> None:
  if key in section and section[key] != value:
    raise ConfigError(f"{key}={section[key]!r} is not supported (expected {value!r})")


def spec(cfg: Qwen2AudioConfig) -> dict:
  """Parameter specs; key paths mirror the HF module names."""
  out = decoder.spec(cfg.text)
  out["audio_tower"] = whisper.spec(cfg.audio)
  out["multi_modal_projector"] = {"linear": {
      "kernel": ParamSpec((cfg.audio.d_model, cfg.text.hidden_size), ("audio_embed", "embed")),
      "bias": ParamSpec((cfg.text.hidden_size,), ("embed",), "zeros")}}
  return out


def audio_output_lengths(n_mel_frames: jax.Array) -> jax.Array:
  """Audio tokens per clip: ((L - 1) // 2 + 1 - 2) // 2 + 1 for L valid mel frames."""
  return (whisper.conv_lengths(n_mel_frames) - 2) // 2 + 1


def encode_audio(params: dict, cfg: Qwen2AudioConfig, input_features: jax.Array,
                 feature_attention_mask: jax.Array, *, capture=(), patch=None):
  """Audio clips -> decoder-width features.

  Args:
    input_features: [A, n_mels, 2 * max_source_positions].
    feature_attention_mask: [A, 2 * max_source_positions] 1 for valid mel frames.
  Returns:
    (features [A, max_source_positions // 2, H], lengths [A] valid rows, captures).
  """
  n_frames = jnp.sum(feature_attention_mask, axis=-1)
  x, captured = whisper.encode(params["audio_tower"], cfg.audio, input_features, n_frames,
                               capture=capture, patch=patch)
  a, t, d = x.shape
  x = jnp.mean(x[:, : t // 2 * 2].reshape(a, t // 2, 2, d), axis=2)
  x = whisper.final_norm(params["audio_tower"], cfg.audio, x)
  sites = Sites(capture, patch)
  x = sites.apply("audio.out", x)
  x = sites.apply("projector.out", dense(params["multi_modal_projector"]["linear"], x))
  return x, audio_output_lengths(n_frames), {**captured, **sites.captured}


def scatter_audio(embeds: jax.Array, is_audio: jax.Array, features: jax.Array, lengths: jax.Array) -> jax.Array:
  """Writes the valid rows of `features` [A, N, H] into the positions where `is_audio`
  [B, S] is true, in row-major order (as HF's masked_scatter), with static shapes."""
  a, n, h = features.shape
  valid = (jnp.arange(n)[None, :] < lengths[:, None]).reshape(-1)
  source = jnp.nonzero(valid, size=a * n, fill_value=0)[0]
  rank = jnp.clip(jnp.cumsum(is_audio.reshape(-1)) - 1, 0, a * n - 1)
  gathered = features.reshape(a * n, h)[source[rank]].reshape(embeds.shape)
  return jnp.where(is_audio[..., None], gathered.astype(embeds.dtype), embeds)


def forward(params: dict, cfg: Qwen2AudioConfig, input_ids: jax.Array, attention_mask: jax.Array | None = None,
            input_features: jax.Array | None = None, feature_attention_mask: jax.Array | None = None,
            position_ids: jax.Array | None = None, *, capture=(), patch=None, cache: dict | None = None) -> Output:
  """The full model: audio + text (or text only when `input_features` is None).

  Args:
    params: parameter tree (see `spec`).
    input_ids: [B, S] with `<|AUDIO|>` already expanded to one token per audio row.
    attention_mask: [B, S] 1 for real tokens (default all ones).
    input_features: [A, n_mels, frames] log-mel windows, one per audio, in the order the
      audio spans appear in the batch.
    feature_attention_mask: [A, frames], required with `input_features`.
    position_ids: [B, S]; default counts real tokens (padding never shifts positions).
    capture: static tuple of site names (see `jaxalm.nn.sites`).
    patch: {site: Patch} replacements (data; may be vmapped).
    cache: kv cache from `init_cache` for incremental decoding.
  Returns:
    Output(logits [B, S, V] float32, captures, cache).
  """
  check_sites(capture, patch)
  token_mask = (jnp.ones(input_ids.shape, bool) if attention_mask is None else attention_mask.astype(bool))
  embeds = decoder.embed(params, input_ids)
  captures = {}
  if input_features is not None:
    if feature_attention_mask is None:
      raise ValueError("feature_attention_mask is required with input_features")
    feats, lengths, captures = encode_audio(params, cfg, input_features, feature_attention_mask,
                                            capture=capture, patch=patch)
    embeds = scatter_audio(embeds, input_ids == cfg.audio_token_id, feats, lengths)
  sites = Sites(capture, patch)
  embeds = sites.apply("embeds.merged", embeds)
  if position_ids is None:
    position_ids = decoder.default_positions(token_mask, cache)
  hidden, dec_captures, cache = decoder.decode(params, cfg.text, embeds, token_mask, position_ids,
                                               cache=cache, capture=capture, patch=patch)
  return Output(logits=decoder.lm_head(params, hidden), captures={**captures, **sites.captured, **dec_captures},
                cache=cache)


def media_inputs(cfg: Qwen2AudioConfig, waveform) -> tuple[dict, int]:
  """One 16 kHz clip -> ({input_features [n_mels, F], feature_attention_mask [F]}, audio tokens)."""
  import numpy as np
  from jaxalm.audio import log_mel
  feats, mask = log_mel(waveform, n_frames=cfg.audio.n_frames, n_mels=cfg.audio.num_mel_bins)
  n_tokens = int(audio_output_lengths(np.asarray(mask).sum()))
  return {"input_features": feats, "feature_attention_mask": mask}, n_tokens


def collate_media(media: list[dict]) -> dict:
  """Stacks per-clip media inputs in prompt order."""
  import numpy as np
  return {k: np.stack([m[k] for m in media]) for k in ("input_features", "feature_attention_mask")}


def init_cache(cfg: Qwen2AudioConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
  """An empty kv cache for `batch` rows and `max_len` slots."""
  return decoder.init_cache(cfg.text, batch, max_len, dtype)
Config = Qwen2AudioConfig
