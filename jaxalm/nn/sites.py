"""Named capture and patch sites, declared once here.

A site is one `Sites.apply(name, x)` call in the forward code. It does nothing unless the
site is captured (named in the static `capture` tuple) or patched (present in the `patch`
dict, which is data and may be vmapped over).

Decoder sites, per layer (captures are stacked on a leading layer axis):
  lm.resid_pre     [L, B, S, H]  residual stream entering decoder layer l
  lm.attn_out      [L, B, S, H]  self-attention output (after o_proj), before the residual add
  lm.mlp_out       [L, B, S, H]  MLP output, before the residual add
  lm.resid_post    [L, B, S, H]  residual stream leaving decoder layer l (Qwen3-VL: including
                                 the DeepStack features added after layers l < K, so it equals
                                 the next layer's lm.resid_pre; HF's hidden_states exclude them)
Audio encoder sites, per layer:
  audio.resid_post [L, A, T, D]  residual stream after encoder layer l (A clips, T frames)
Vision encoder sites (Qwen3-VL), per layer; N patches of all images, concatenated as the
processor emits them (each 2x2 merge group contiguous), M = N / 4 merged tokens:
  vision.resid_post [L, N, D]    residual stream after vision block l
Single sites:
  audio.embeds     [A, T, D]     encoder input after the conv front end and positions
  audio.out        [A, T/2, D]   pooled, normed encoder output
  projector.out    [A, T/2, H]   audio features in the decoder's width
  embeds.merged    [B, S, H]     decoder input embeddings after the audio scatter
  lm.final         [B, S, H]     decoder output after the final norm
  vision.embeds    [N, D]        patch embeddings plus interpolated learned positions
  vision.out       [M, H]        merger output: image features in the decoder's width
  vision.deepstack [K, M, H]     DeepStack merger outputs, one per configured vision layer

A patch is `Patch(value, mask)`: `value` has the site's capture shape and `mask` has that
shape without the feature axis, e.g. (layer, batch, position) for a layered site. A bool
mask replaces the activation by `value` where it is true. A float mask interpolates,
`x + mask * (value - x)`: at mask 0 the run is clean, and the gradient with respect to the
mask is the first-order (attribution patching) estimate of patching in `value`.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

LAYER_SITES = {
    "lm": ("lm.resid_pre", "lm.attn_out", "lm.mlp_out", "lm.resid_post"),
    "audio": ("audio.resid_post",),
    "vision": ("vision.resid_post",),
}
SINGLE_SITES = ("audio.embeds", "audio.out", "projector.out", "embeds.merged", "lm.final",
                "vision.embeds", "vision.out", "vision.deepstack")
ALL_SITES = tuple(s for group in LAYER_SITES.values() for s in group) + SINGLE_SITES


class Patch(NamedTuple):
  """Replacement `value` [..., F] written where `mask` [...] is true."""
  value: jax.Array
  mask: jax.Array


def check_sites(capture, patch) -> None:
  """Raises ValueError for unknown site names."""
  names = set(capture) | set(patch or {})
  unknown = sorted(names - set(ALL_SITES))
  if unknown:
    raise ValueError(f"unknown site(s) {unknown}; known sites: {list(ALL_SITES)}")


class Sites:
  """Collects captures and applies patches for one group of sites (one stack or one layer)."""

  def __init__(self, capture=(), patch: Mapping[str, Patch] | None = None):
    self.capture = tuple(capture)
    self.patch = patch or {}
    self.captured: dict[str, jax.Array] = {}

  def apply(self, name: str, x: jax.Array) -> jax.Array:
    if name in self.patch:
      value, mask = self.patch[name]
      if mask.dtype == jnp.bool_:
        x = jnp.where(mask[..., None], value.astype(x.dtype), x)
      else:
        x = x + mask[..., None].astype(x.dtype) * (value.astype(x.dtype) - x)
    if name in self.capture:
      self.captured[name] = x
    return x


def split_layer_patch(patch: Mapping[str, Patch] | None, group: str) -> dict[str, Patch]:
  """The layered patches of one stack (e.g. "lm"), to be scanned over their leading axis."""
  return {k: v for k, v in (patch or {}).items() if k in LAYER_SITES[group]}
