"""A full layer x site x role patch sweep: one vmapped call vs one forward pass per patch.

Same model, same items, same specs; compile time reported separately.

  python bench/patch_sweep.py [--layers 4] [--hidden 256] [--items 2] [--chunk N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny_hf  # noqa: E402
from test_scoring import make_items  # noqa: E402

import jaxalm  # noqa: E402
from jaxalm import patching  # noqa: E402
from jaxalm.branches import Scorer  # noqa: E402
from jaxalm.converters import convert  # noqa: E402
from jaxalm.nn.sites import Patch  # noqa: E402


def build(layers: int, hidden: int, d: str):
  from transformers import Qwen2AudioForConditionalGeneration
  tok = tiny_hf.make_tokenizer()
  cfg = tiny_hf.make_config("gqa", tok)
  cfg.text_config.num_hidden_layers = layers
  cfg.text_config.hidden_size = hidden
  cfg.text_config.intermediate_size = 3 * hidden
  cfg.text_config.layer_types = ["full_attention"] * layers
  model = Qwen2AudioForConditionalGeneration(cfg).eval()
  model.save_pretrained(f"{d}/hf")
  tiny_hf.make_processor(tok).save_pretrained(f"{d}/hf")
  convert(f"{d}/hf", f"{d}/jx")
  return jaxalm.load(f"{d}/jx")


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--layers", type=int, default=4)
  ap.add_argument("--hidden", type=int, default=256)
  ap.add_argument("--items", type=int, default=2)
  ap.add_argument("--chunk", type=int, default=None)
  args = ap.parse_args()
  model = build(args.layers, args.hidden, tempfile.mkdtemp())
  items, waves = make_items(args.items)
  for it in items:
    object.__setattr__(it, "candidates", it.candidates[:2])
  scorer = Scorer(model, ("joint", "same_audio"), load_media=waves.__getitem__)
  batch = patching.build_batch(scorer, items)
  values, _, _ = patching.source_values(model.params, model.forward, batch)
  specs = patching.make_specs(args.layers)
  arrays = patching.arrays(batch)
  print(f"{len(specs)} patches ({len(patching.SITES)} sites x {args.layers} layers x {len(patching.PATCH_ROLES)} roles), "
        f"{args.items} items x 2 candidates, sequence {batch.target['input_ids'].shape[1]}, {jax.devices()[0].platform}")

  def vmapped():
    return patching.sweep(model.params, arrays, values, jnp.asarray(specs), forward=model.forward,
                          chunk=args.chunk)[1].block_until_ready()

  fwd = jax.jit(model.forward, static_argnames="capture")

  @jax.jit
  def one(params, arrays, values, spec):
    si, layer, role = spec[0], spec[1], spec[2]
    pos = (arrays["roles"] == role) & arrays["aligned"]
    patch = {s: Patch(values[s], (si == k) & (jnp.arange(args.layers) == layer)[:, None, None] & pos[None])
             for k, s in enumerate(patching.SITES)}
    s, _ = patching._scores(params, fwd, arrays["inputs"], arrays["label"], 8, patch=patch)
    return patching.candidate_margins(s, arrays["cand_mask"], arrays["ya"], arrays["yt"])[1]

  def looped():
    return np.stack([np.asarray(one(model.params, arrays, values, jnp.asarray(s))) for s in specs])

  t = time.perf_counter(); a = np.asarray(vmapped()); c_v = time.perf_counter() - t
  t = time.perf_counter(); b = looped(); c_l = time.perf_counter() - t
  t = time.perf_counter(); vmapped(); r_v = time.perf_counter() - t
  t = time.perf_counter(); looped(); r_l = time.perf_counter() - t
  print(f"vmapped sweep: {r_v:.2f} s (first call incl. compile {c_v:.2f} s)")
  print(f"one forward per patch: {r_l:.2f} s (first pass incl. compile {c_l:.2f} s)")
  print(f"speed-up: {r_l / r_v:.2f}x; max |difference| of patched margins {np.abs(a - b).max():.1e}")


if __name__ == "__main__":
  main()
