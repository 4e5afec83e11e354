"""Qwen3-VL: vision transformer + 2x2 patch merger -> Qwen3 decoder with interleaved MRoPE and
DeepStack.

Image tokens (one per merged 2x2 patch group, `<|image_pad|>` expanded by the processor) are
written into the decoder input with a fixed-size scatter. The DeepStack mergers' outputs
(one per configured vision layer) are added at the image positions after decoder layers
0..K-1. Positions are 3D (temporal, height, width) as HF's `get_rope_index`: text tokens
advance all three rows by one; an image's tokens sit at (start, start + row, start + col) of
its merged grid and advance the text after it by max(grid_h, grid_w) / 2. `rope_index`
computes them with static shapes from the token ids and grids, so it runs inside jit. Only
images are supported (no videos).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxalm.models.output import Output
from jaxalm.nn import decoder, vision
from jaxalm.nn.decoder import DecoderConfig
from jaxalm.nn.sites import Sites, check_sites
from jaxalm.nn.vision import VisionConfig

MODEL_TYPE = "qwen3_vl"
MODALITY = "image"

# HF's class defaults (Qwen3VLTextConfig, Qwen3VLVisionConfig, Qwen3VLConfig), used for keys a
# config.json leaves out.
_TEXT_DEFAULTS = dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, head_dim=128, hidden_act="silu",
                      rms_norm_eps=1e-6, attention_bias=False)
_VISION_DEFAULTS = dict(depth=27, hidden_size=1152, hidden_act="gelu_pytorch_tanh", intermediate_size=4304,
                        num_heads=16, in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                        out_hidden_size=3584, num_position_embeddings=2304, deepstack_visual_indexes=(8, 16, 24))
_TOKEN_DEFAULTS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                       vision_end_token_id=151653)


class ConfigError(ValueError):
  """A HF config this implementation cannot run faithfully."""


class ImageError(ValueError):
  """A missing or unreadable image file."""


@dataclasses.dataclass(frozen=True)
class Qwen3VLConfig:
  vision: VisionConfig
  text: DecoderConfig
  image_token_id: int
  video_token_id: int
  vision_start_token_id: int
  vision_end_token_id: int

  @classmethod
  def from_hf(cls, hf: dict[str, Any]) -> "Qwen3VLConfig":
    """From a HF `config.json` dict, transformers-5 (`rope_parameters`) or as published
    (`rope_scaling` + `rope_theta`); refuses settings this implementation does not run."""
    t = {**_TEXT_DEFAULTS, **hf.get("text_config", {})}
    v = {**_VISION_DEFAULTS, **hf.get("vision_config", {})}
    if t["hidden_act"] != "silu":
      raise ConfigError(f"text_config.hidden_act={t['hidden_act']!r} is not supported (expected 'silu')")
    if t["attention_bias"]:
      raise ConfigError("text_config.attention_bias=True is not supported")
    if v["hidden_act"] != "gelu_pytorch_tanh":
      raise ConfigError(f"vision_config.hidden_act={v['hidden_act']!r} is not supported (expected 'gelu_pytorch_tanh')")
    rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
      raise ConfigError(f"text_config rope_type {rope_type!r} is not supported (only 'default')")
    vision_rope = v.get("rope_parameters") or {}
    if vision_rope.get("rope_type", "axial") != "axial":
      raise ConfigError(f"vision_config rope_type {vision_rope['rope_type']!r} is not supported (only 'axial')")
    heads = t["num_attention_heads"]
    text = DecoderConfig(
        vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
        num_layers=t["num_hidden_layers"], num_heads=heads, num_kv_heads=t["num_key_value_heads"] or heads,
        head_dim=t["head_dim"] or t["hidden_size"] // heads,
        rope_theta=float(rope.get("rope_theta", t.get("rope_theta", 500000.0))), rms_norm_eps=t["rms_norm_eps"],
        attention_bias=False, qk_norm=True, tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        # HF's Qwen3-VL text rotary embedding interleaves whatever `mrope_interleaved` says.
        mrope_section=tuple(rope.get("mrope_section", (24, 20, 20))), mrope_interleaved=True)
    layers = tuple(v["deepstack_visual_indexes"])
    if len(set(layers)) != len(layers) or any(not 0 <= i < v["depth"] for i in layers):
      raise ConfigError(f"vision_config.deepstack_visual_indexes={list(layers)} must be distinct layers "
                        f"below depth {v['depth']}")
    if math.isqrt(v["num_position_embeddings"]) ** 2 != v["num_position_embeddings"]:
      raise ConfigError(f"vision_config.num_position_embeddings={v['num_position_embeddings']} is not a square")
    if v["out_hidden_size"] != text.hidden_size:
      raise ConfigError(f"vision_config.out_hidden_size={v['out_hidden_size']} differs from the text "
                        f"hidden_size {text.hidden_size}")
    vis = VisionConfig(
        hidden_size=v["hidden_size"], intermediate_size=v["intermediate_size"], num_layers=v["depth"],
        num_heads=v["num_heads"], out_hidden_size=v["out_hidden_size"], in_channels=v["in_channels"],
        patch_size=v["patch_size"], temporal_patch_size=v["temporal_patch_size"],
        spatial_merge_size=v["spatial_merge_size"], num_position_embeddings=v["num_position_embeddings"],
        deepstack_layers=layers, rope_theta=float(vision_rope.get("rope_theta", 10000.0)))
    tokens = {k: int(hf.get(k, d)) for k, d in _TOKEN_DEFAULTS.items()}
    return cls(vision=vis, text=text, **tokens)

  def replace(self, *, scan_layers: bool) -> "Qwen3VLConfig":
    """The same config with layers scanned or unrolled."""
    return dataclasses.replace(
        self, vision=dataclasses.replace(self.vision, scan_layers=scan_layers),
        text=dataclasses.replace(self.text, scan_layers=scan_layers))


def spec(cfg: Qwen3VLConfig) -> dict:
  """Parameter specs; key paths mirror the HF module names (`visual/layers` is HF's
  `visual.blocks`, see `jaxalm.nn.vision.spec`)."""
  out = decoder.spec(cfg.text)
  out["visual"] = vision.spec(cfg.vision)
  return out


def rope_index(cfg: Qwen3VLConfig, input_ids: jax.Array, image_grid_thw: jax.Array | None,
               attention_mask: jax.Array | None = None, mm_token_type_ids: jax.Array | None = None):
  """3D rotary positions as HF's `get_rope_index`, for images; jittable (static shapes).

  Args:
    input_ids: [B, S].
    image_grid_thw: [I, 3] patch grids of the images, in the order their token runs appear in
      the batch (row-major), or None for text only.
    attention_mask: [B, S] 1 for real tokens; padding gets position 0 and is skipped when
      counting, wherever it is (left or right).
    mm_token_type_ids: [B, S] 1 for image tokens (the processor's output); by default
      `input_ids == image_token_id`.
  Returns:
    (positions [3, B, S] int32, rope_deltas [B] int32). Text that continues a prompt with
    images takes positions `decoder.default_positions(mask, cache) + rope_deltas[:, None]`
    (`forward` keeps the deltas in the cache and does this by default).
  """
  b, s = input_ids.shape
  mask = jnp.ones((b, s), bool) if attention_mask is None else attention_mask.astype(bool)
  is_image = (input_ids == cfg.image_token_id) if mm_token_type_ids is None else (mm_token_type_ids == 1)
  is_image = is_image & mask
  if image_grid_thw is None:
    is_image = jnp.zeros_like(is_image)
    image_grid_thw = jnp.ones((1, 3), jnp.int32)
  idx = jnp.arange(s)
  # Token runs are found among the real tokens only: the previous real token decides.
  last_real = jax.lax.cummax(jnp.where(mask, idx, -1), axis=1)
  prev_real = jnp.concatenate([jnp.full((b, 1), -1), last_real[:, :-1]], axis=1)
  prev_image = (prev_real >= 0) & jnp.take_along_axis(is_image, jnp.maximum(prev_real, 0), axis=1)
  run_start = is_image & ~prev_image
  image = (jnp.cumsum(run_start.reshape(-1)) - 1).reshape(b, s)
  grid = image_grid_thw.astype(jnp.int32)[jnp.clip(image, 0, image_grid_thw.shape[0] - 1)]
  m = cfg.vision.spatial_merge_size
  grid_h, grid_w = grid[..., 1] // m, grid[..., 2] // m
  compact = jnp.cumsum(mask, axis=1) - 1
  rank = compact - jax.lax.cummax(jnp.where(run_start, compact, -1), axis=1)
  step = jnp.where(is_image, jnp.where(run_start, jnp.maximum(grid_h, grid_w), 0), 1) * mask
  before = jnp.cumsum(step, axis=1) - step
  start = jnp.take_along_axis(before, jnp.maximum(jax.lax.cummax(jnp.where(run_start, idx, -1), axis=1), 0), axis=1)
  base = jnp.where(is_image, start, before)
  offsets = jnp.stack([rank // (grid_h * grid_w), (rank // grid_w) % grid_h, rank % grid_w])
  positions = jnp.where(mask, base + jnp.where(is_image, offsets, 0), 0).astype(jnp.int32)
  deltas = jnp.max(jnp.where(mask, positions, -1), axis=(0, 2)) + 1 - jnp.sum(mask, axis=1)
  return positions, deltas.astype(jnp.int32)


def scatter_tokens(embeds: jax.Array, is_image: jax.Array, features: jax.Array) -> jax.Array:
  """Writes rows of `features` [M, H] into the positions where `is_image` [B, S] is true, in
  row-major order (HF's masked_scatter), with static shapes. Leading axes of `features`
  before the last two broadcast (e.g. [K, M, H] -> [K, B, S, H])."""
  rank = jnp.clip(jnp.cumsum(is_image.reshape(-1)) - 1, 0, features.shape[-2] - 1).reshape(is_image.shape)
  return jnp.where(is_image[..., None], features[..., rank, :].astype(embeds.dtype), embeds)


def encode_images(params: dict, cfg: Qwen3VLConfig, pixel_values: jax.Array, image_grid_thw: jax.Array,
                  *, capture=(), patch=None):
  """Images -> (tokens [N/4, H], deepstack [K, N/4, H], captures); see `jaxalm.nn.vision.encode`."""
  return vision.encode(params["visual"], cfg.vision, pixel_values, image_grid_thw, capture=capture, patch=patch)


def forward(params: dict, cfg: Qwen3VLConfig, input_ids: jax.Array, attention_mask: jax.Array | None = None,
            pixel_values: jax.Array | None = None, image_grid_thw: jax.Array | None = None,
            position_ids: jax.Array | None = None, mm_token_type_ids: jax.Array | None = None,
            *, capture=(), patch=None, cache: dict | None = None) -> Output:
  """The full model: images + text (or text only when `pixel_values` is None).

  Args:
    params: parameter tree (see `spec`).
    input_ids: [B, S] with `<|image_pad|>` expanded to one token per merged patch group.
    attention_mask: [B, S] 1 for real tokens (default all ones).
    pixel_values: [N, C * T * P * P] packed patches of all images (HF processor layout).
    image_grid_thw: [I, 3] patch grid of each image; required with `pixel_values`.
    position_ids: [3, B, S] (or HF's [4, B, S], whose first row is dropped) or [B, S].
      Default: with `image_grid_thw`, `rope_index` (offset by the cached tokens, if any);
      otherwise 1D positions counting real tokens. Either way a cache's `rope_delta` is
      added, so text continues a cached prompt with images at HF's positions.
    mm_token_type_ids: [B, S] 1 at image tokens, as the processor returns (optional).
    capture: static tuple of site names (see `jaxalm.nn.sites`).
    patch: {site: Patch} replacements (data; may be vmapped).
    cache: kv cache from `init_cache` (or any decoder cache) for incremental decoding; the
      returned cache carries `rope_delta` [B], the next text position minus the real tokens
      cached (from the positions used, given or default).
  Returns:
    Output(logits [B, S, V] float32, captures, cache).
  """
  check_sites(capture, patch)
  token_mask = jnp.ones(input_ids.shape, bool) if attention_mask is None else attention_mask.astype(bool)
  embeds = decoder.embed(params, input_ids)
  captures, deepstack = {}, None
  if pixel_values is not None:
    if image_grid_thw is None:
      raise ValueError("image_grid_thw is required with pixel_values")
    is_image = input_ids == cfg.image_token_id
    if not any(isinstance(a, jax.core.Tracer) for a in (is_image, image_grid_thw)):  # checkable outside jit only
      n_image = int(jnp.sum(is_image))
      n_rows = int(jnp.sum(jnp.prod(jnp.asarray(image_grid_thw), axis=-1))) // cfg.vision.merge_unit
      if n_image != n_rows:
        raise ValueError(f"{n_image} image tokens in input_ids, but image_grid_thw gives {n_rows}")
    tokens, features, captures = encode_images(params, cfg, pixel_values, image_grid_thw,
                                               capture=capture, patch=patch)
    embeds = scatter_tokens(embeds, is_image, tokens)
    if features.shape[0]:
      features = features[: cfg.text.num_layers]  # HF ignores DeepStack layers past the decoder's
      deepstack = scatter_tokens(jnp.zeros((features.shape[0], *embeds.shape), embeds.dtype), is_image, features)
  sites = Sites(capture, patch)
  embeds = sites.apply("embeds.merged", embeds)
  delta = _cached_delta(cache, token_mask.shape[0])
  if position_ids is None:
    if image_grid_thw is not None:
      position_ids, _ = rope_index(cfg, input_ids, image_grid_thw, attention_mask, mm_token_type_ids)
      if cache is not None:
        position_ids = position_ids + (jnp.sum(cache["valid"], axis=-1, dtype=jnp.int32) + delta)[None, :, None]
    else:
      position_ids = decoder.default_positions(token_mask, cache) + delta[:, None]
  elif position_ids.ndim == 3 and position_ids.shape[0] == 4:
    position_ids = position_ids[1:]
  hidden, dec_captures, cache = decoder.decode(params, cfg.text, embeds, token_mask, position_ids, cache=cache,
                                               capture=capture, patch=patch, deepstack=deepstack)
  if cache is not None:
    cache = {**cache, "rope_delta": _next_delta(position_ids, token_mask, cache["valid"], delta)}
  return Output(logits=decoder.lm_head(params, hidden), captures={**captures, **sites.captured, **dec_captures},
                cache=cache)


def _cached_delta(cache: dict | None, batch: int) -> jax.Array:
  """The cache's per-row rope delta [B] (zeros when it has none)."""
  if cache is None or "rope_delta" not in cache:
    return jnp.zeros((batch,), jnp.int32)
  return cache["rope_delta"]


def _next_delta(positions: jax.Array, token_mask: jax.Array, valid: jax.Array, delta: jax.Array) -> jax.Array:
  """Rope delta after a step: the next text position minus the real tokens so far (rows
  without real tokens in the step keep theirs)."""
  pos = positions if positions.ndim == 3 else positions[None]
  last = jnp.max(jnp.where(token_mask[None], pos, -1), axis=(0, 2))
  n = jnp.sum(valid, axis=-1, dtype=jnp.int32)
  return jnp.where(jnp.any(token_mask, axis=-1), last + 1 - n, delta).astype(jnp.int32)


def init_cache(cfg: Qwen3VLConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
  """An empty kv cache for `batch` rows and `max_len` slots, with a per-row `rope_delta`
  (the next text position minus the tokens cached, see `rope_index`)."""
  return {**decoder.init_cache(cfg.text, batch, max_len, dtype), "rope_delta": jnp.zeros((batch,), jnp.int32)}


def load_media(path) -> Any:
  """An image file as an RGB PIL image (ImageError naming the file if it cannot be read)."""
  import os

  from PIL import Image, UnidentifiedImageError
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ImageError(f"image file not found: {path}")
  try:
    with Image.open(path) as img:
      return img.convert("RGB")
  except (OSError, UnidentifiedImageError, ValueError) as e:
    raise ImageError(f"cannot read image file {path}: {e}") from e


def media_inputs(cfg: Qwen3VLConfig, image, processor=None) -> tuple[dict, int]:
  """One image -> ({pixel_values [n_patches, C * T * P * P], image_grid_thw [3]}, image tokens).

  Args:
    image: a PIL image (or an array the HF image processor takes).
    processor: the checkpoint's HF processor (`Model.processor`) or its image processor.
  """
  import numpy as np
  image_processor = getattr(processor, "image_processor", processor)
  if image_processor is None:
    raise ValueError("qwen3_vl media_inputs needs the checkpoint's image processor (processor=model.processor)")
  out = image_processor(images=[image], return_tensors="np")
  pixels = np.asarray(out["pixel_values"], np.float32)
  grid = np.asarray(out["image_grid_thw"], np.int32).reshape(-1, 3)
  if grid.shape[0] != 1:
    raise ValueError(f"the image processor returned {grid.shape[0]} images for one")
  if pixels.shape != (int(np.prod(grid[0])), cfg.vision.patch_dim):
    raise ValueError(f"the image processor returned pixel_values {pixels.shape} for grid {grid[0].tolist()}; "
                     f"the model takes {cfg.vision.patch_dim} values per patch")
  return {"pixel_values": pixels, "image_grid_thw": grid[0]}, int(np.prod(grid[0])) // cfg.vision.merge_unit


def patch_bucket(n: int) -> int:
  """Padded patch count for `n` patches: a multiple of 64 and of 2**(bit_length(n) - 3), so
  at most ~25% padding and few distinct compiled shapes."""
  step = max(64, 2 ** (int(n).bit_length() - 3))
  return -(-int(n) // step) * step


def collate_media(media: list[dict]) -> dict:
  """Per-image inputs in prompt order -> pixel_values [N, D] (the patches of all images,
  zero rows padding them to `patch_bucket`) and image_grid_thw [I, 3]."""
  import numpy as np
  pixels = np.concatenate([m["pixel_values"] for m in media]).astype(np.float32)
  padded = np.zeros((patch_bucket(len(pixels)), pixels.shape[1]), np.float32)
  padded[:len(pixels)] = pixels
  return {"pixel_values": padded, "image_grid_thw": np.stack([m["image_grid_thw"] for m in media]).astype(np.int32)}


Config = Qwen3VLConfig
