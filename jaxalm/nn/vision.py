"""The Qwen3-VL vision transformer: patches -> blocks -> 2x2 patch merger (+ DeepStack mergers).

Input is HF's packed layout: `pixel_values` [N, C * T * P * P], the patches of all images
concatenated, each image's patches in spatial-merge-block order (the 2x2 patches that merge
into one token are contiguous), with `grid_thw` [I, 3] giving each image's (t, h, w) patch
grid. Everything that depends on the grids (learned-position interpolation, 2D rotary
positions, which patches attend to which) is computed from `grid_thw` with static shapes, so
the encoder runs under jit with traced grids. Attention is block-diagonal per image frame
(HF's cu_seqlens), here a dense [N, N] mask. Rows past the grids' total are padding: they
attend only to themselves and their outputs are meaningless.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxalm.nn.attention import attention
from jaxalm.nn.basic import dense, gelu, layer_norm
from jaxalm.nn.params import ParamSpec, stacked
from jaxalm.nn.rope import apply_rope, inv_frequencies
from jaxalm.nn.sites import LAYER_SITES, Sites, split_layer_patch
from jaxalm.nn.stack import run_layers


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  out_hidden_size: int
  in_channels: int = 3
  patch_size: int = 16
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  num_position_embeddings: int = 2304
  deepstack_layers: tuple[int, ...] = (8, 16, 24)
  rope_theta: float = 10000.0
  layer_norm_eps: float = 1e-6
  scan_layers: bool = True

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Values per flattened patch: C * T * P * P."""
    return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

  @property
  def grid_side(self) -> int:
    """Side of the square learned position table."""
    return math.isqrt(self.num_position_embeddings)

  @property
  def merge_unit(self) -> int:
    return self.spatial_merge_size ** 2

  @property
  def merged_size(self) -> int:
    return self.hidden_size * self.merge_unit


def _linear(d_in, d_out, axes):
  return {"kernel": ParamSpec((d_in, d_out), axes), "bias": ParamSpec((d_out,), axes[1:], "zeros")}


def _ln(d, axis="vision_embed"):
  return {"scale": ParamSpec((d,), (axis,), "ones"), "bias": ParamSpec((d,), (axis,), "zeros")}


def layer_spec(cfg: VisionConfig) -> dict:
  d, f = cfg.hidden_size, cfg.intermediate_size
  return {
      "norm1": _ln(d),
      "norm2": _ln(d),
      "attn": {"qkv": _linear(d, 3 * d, ("vision_embed", "vision_heads")),
               "proj": _linear(d, d, ("vision_heads", "vision_embed"))},
      "mlp": {"linear_fc1": _linear(d, f, ("vision_embed", "vision_mlp")),
              "linear_fc2": _linear(f, d, ("vision_mlp", "vision_embed"))},
  }


def merger_spec(cfg: VisionConfig, postshuffle_norm: bool) -> dict:
  """Patch merger: LayerNorm (per patch, or per 2x2 group when `postshuffle_norm`) -> Linear
  -> GELU -> Linear to the decoder width."""
  m = cfg.merged_size
  return {
      "norm": _ln(m if postshuffle_norm else cfg.hidden_size, None),
      "linear_fc1": _linear(m, m, (None, "vision_mlp")),
      "linear_fc2": _linear(m, cfg.out_hidden_size, ("vision_mlp", "embed")),
  }


def spec(cfg: VisionConfig) -> dict:
  """Parameter specs of HF's `visual`. The patch embedding keeps PyTorch's Conv3d layout
  [D, C, T, P, P] (`weight`; it is applied as a linear map over flattened patches), and HF's
  `blocks.<i>` are the stacked `layers`."""
  d = cfg.hidden_size
  return {
      "patch_embed": {"proj": {
          "weight": ParamSpec((d, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size),
                              ("vision_embed", None, None, None, None)),
          "bias": ParamSpec((d,), ("vision_embed",), "zeros")}},
      "pos_embed": {"embedding": ParamSpec((cfg.num_position_embeddings, d), (None, "vision_embed"))},
      "layers": stacked(layer_spec(cfg), cfg.num_layers),
      "merger": merger_spec(cfg, postshuffle_norm=False),
      "deepstack_merger_list": {str(i): merger_spec(cfg, postshuffle_norm=True)
                                for i in range(len(cfg.deepstack_layers))},
  }


def patch_geometry(grid_thw: jax.Array, n_patches: int, merge: int) -> dict[str, jax.Array]:
  """Where every packed patch lies, from the grids (static shapes; works on traced grids).

  Args:
    grid_thw: [I, 3] (t, h, w) patch grid of each image.
    n_patches: N, rows of `pixel_values` (>= the grids' total; extra rows are padding).
    merge: spatial merge size.
  Returns:
    dict of [N] int32 arrays: `row`, `col` (patch coordinates in its frame), `height`,
    `width` (its image's grid), `segment` (equal for patches of one frame: attention blocks),
    and bool `valid`.
  """
  grid = grid_thw.astype(jnp.int32)
  counts = jnp.prod(grid, axis=-1)
  ends = jnp.cumsum(counts)
  starts = ends - counts
  i = jnp.arange(n_patches, dtype=jnp.int32)
  image = jnp.sum(i[:, None] >= ends[None, :], axis=1, dtype=jnp.int32)
  valid = image < grid.shape[0]
  image = jnp.minimum(image, grid.shape[0] - 1)
  h, w = grid[image, 1], grid[image, 2]
  offset = i - starts[image]
  frame, within = offset // (h * w), offset % (h * w)
  blocks_w = w // merge
  in_col, in_row = within % merge, (within // merge) % merge
  block_col = (within // (merge * merge)) % blocks_w
  block_row = within // (merge * merge * blocks_w)
  segment = jnp.where(valid, starts[image] + frame * h * w, n_patches + i)
  return {"row": block_row * merge + in_row, "col": block_col * merge + in_col, "height": h, "width": w,
          "segment": segment, "valid": valid}


def _bilinear_taps(index: jax.Array, size: jax.Array, side: int):
  """Two taps into a `side`-long axis and their weights, for `index` on an axis of length
  `size` resampled with align_corners=True (as HF's F.interpolate-equivalent helper)."""
  src = index.astype(jnp.float32) * (side - 1) / jnp.maximum(size - 1, 1).astype(jnp.float32)
  floor = jnp.floor(src)
  offsets = jnp.arange(2, dtype=jnp.float32)
  taps = jnp.clip(floor.astype(jnp.int32)[:, None] + jnp.arange(2), 0, side - 1)
  weights = jnp.maximum(1.0 - jnp.abs(src[:, None] - floor[:, None] - offsets), 0.0)
  return taps, weights


def interpolated_positions(table: jax.Array, geometry: dict, side: int) -> jax.Array:
  """The learned [side * side, D] position table bilinearly resampled to every patch's
  image grid (align_corners=True): [N, D] float32."""
  h_taps, h_weights = _bilinear_taps(geometry["row"], geometry["height"], side)
  w_taps, w_weights = _bilinear_taps(geometry["col"], geometry["width"], side)
  n = h_taps.shape[0]
  index = (h_taps[:, :, None] * side + w_taps[:, None, :]).reshape(n, 4)
  weight = (h_weights[:, :, None] * w_weights[:, None, :]).reshape(n, 4)
  return jnp.sum(table[index].astype(jnp.float32) * weight[..., None], axis=1)


def rotary_cos_sin(cfg: VisionConfig, geometry: dict) -> tuple[jax.Array, jax.Array]:
  """2D rotary angles: head_dim / 4 frequencies of the row, then of the column, the
  concatenation repeated twice -> (cos, sin) each [N, head_dim] float32."""
  inv = inv_frequencies(cfg.head_dim // 2, cfg.rope_theta)
  freqs = jnp.concatenate([geometry["row"].astype(jnp.float32)[:, None] * inv,
                           geometry["col"].astype(jnp.float32)[:, None] * inv], axis=-1)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def block(p: dict, cfg: VisionConfig, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array) -> jax.Array:
  """One vision block: x [N, D], cos/sin [N, head_dim], mask [N, N] -> [N, D]."""
  n, hd = cfg.num_heads, cfg.head_dim
  t = x.shape[0]
  h = layer_norm(p["norm1"], x, cfg.layer_norm_eps)
  qkv = dense(p["attn"]["qkv"], h).reshape(t, 3, n, hd)
  # Rotated in float32 and cast back, as HF's apply_rotary_pos_emb_vision.
  q, k = (apply_rope(qkv[None, :, i].astype(jnp.float32), cos[None], sin[None]).astype(x.dtype) for i in (0, 1))
  o = attention(q, k, qkv[None, :, 2], mask[None], scale=hd ** -0.5)[0]
  x = x + dense(p["attn"]["proj"], o.reshape(t, n * hd))
  h = layer_norm(p["norm2"], x, cfg.layer_norm_eps)
  m = p["mlp"]
  return x + dense(m["linear_fc2"], jax.nn.gelu(dense(m["linear_fc1"], h), approximate=True))


def merge(p: dict, cfg: VisionConfig, x: jax.Array, postshuffle_norm: bool) -> jax.Array:
  """Patch merger over 2x2 groups: x [N, D] -> [N / 4, out_hidden_size]."""
  groups = x.shape[0] // cfg.merge_unit
  if postshuffle_norm:
    x = layer_norm(p["norm"], x.reshape(groups, cfg.merged_size), cfg.layer_norm_eps)
  else:
    x = layer_norm(p["norm"], x, cfg.layer_norm_eps).reshape(groups, cfg.merged_size)
  return dense(p["linear_fc2"], gelu(dense(p["linear_fc1"], x)))


def _layer(cfg: VisionConfig, capture, cos, sin, mask):
  def fn(carry, xs):
    x, taps = carry
    p, patch, slot = xs
    sites = Sites(capture, patch)
    x = sites.apply("vision.resid_post", block(p, cfg, x, cos, sin, mask))
    # Keep the stream after DeepStack layers: slot k >= 0 for the k-th of them, else -1.
    k = jnp.maximum(slot, 0)
    kept = jnp.where(slot >= 0, x, jax.lax.dynamic_index_in_dim(taps, k, keepdims=False))
    return (x, jax.lax.dynamic_update_index_in_dim(taps, kept, k, 0)), sites.captured

  return fn


def encode(params: dict, cfg: VisionConfig, pixel_values: jax.Array, grid_thw: jax.Array,
           *, capture=(), patch=None, dtype=None):
  """Images -> decoder-width tokens and DeepStack features.

  Args:
    params: the vision tower's parameters (`visual`).
    pixel_values: [N, C * T * P * P] packed patches (HF processor layout); N a multiple of 4.
    grid_thw: [I, 3] patch grid (t, h, w) of each image, in packing order.
    capture, patch: `vision.*` sites.
  Returns:
    (tokens [N / 4, out_hidden_size], deepstack [K, N / 4, out_hidden_size] (K = number of
    DeepStack layers; K may be 0), captures).
  """
  dtype = dtype or params["patch_embed"]["proj"]["weight"].dtype
  n = pixel_values.shape[0]
  if n % cfg.merge_unit:
    raise ValueError(f"pixel_values has {n} patches, not a multiple of {cfg.merge_unit}")
  geometry = patch_geometry(grid_thw, n, cfg.spatial_merge_size)
  proj = params["patch_embed"]["proj"]
  x = jnp.einsum("nk,dk->nd", pixel_values.astype(dtype), proj["weight"].reshape(cfg.hidden_size, -1).astype(dtype))
  x = x + proj["bias"].astype(dtype)
  x = x + interpolated_positions(params["pos_embed"]["embedding"], geometry, cfg.grid_side).astype(dtype)
  sites = Sites(capture, patch)
  x = sites.apply("vision.embeds", x)
  cos, sin = rotary_cos_sin(cfg, geometry)
  mask = geometry["segment"][:, None] == geometry["segment"][None, :]
  fn = _layer(cfg, tuple(c for c in capture if c in LAYER_SITES["vision"]), cos, sin, mask)
  tapped = sorted(cfg.deepstack_layers)
  slots = jnp.array([tapped.index(i) if i in tapped else -1 for i in range(cfg.num_layers)], jnp.int32)
  taps = jnp.zeros((max(len(tapped), 1), *x.shape), x.dtype)
  (x, taps), layer_captures = run_layers(fn, (x, taps), (params["layers"], split_layer_patch(patch, "vision"), slots),
                                         scan=cfg.scan_layers)
  merged = merge(params["merger"], cfg, x, postshuffle_norm=False)
  # In layer order, each through the merger at its index in the config (as HF).
  features = [merge(params["deepstack_merger_list"][str(cfg.deepstack_layers.index(layer))], cfg, taps[k],
                    postshuffle_norm=True) for k, layer in enumerate(tapped)]
  features = jnp.stack(features) if features else jnp.zeros((0, *merged.shape), merged.dtype)
  merged = sites.apply("vision.out", merged)
  features = sites.apply("vision.deepstack", features)
  return merged, features, {**layer_captures, **sites.captured}
