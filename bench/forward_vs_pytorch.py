"""Our jitted Qwen2-Audio forward vs transformers' PyTorch forward, same machine, same inputs.

A mid-size random config (4 encoder + 4 decoder layers, hidden 512) with 30 s audio.
Prints compile time separately and the steady-state ratio.

  python bench/forward_vs_pytorch.py [--batch 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny_hf  # noqa: E402

import jaxalm  # noqa: E402
from jaxalm.converters import convert  # noqa: E402


def mid_config(tokenizer):
  from transformers import Qwen2AudioConfig
  ids = dict(zip(tiny_hf.SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(tiny_hf.SPECIAL_TOKENS))))
  return Qwen2AudioConfig(
      audio_config=dict(d_model=512, encoder_layers=4, encoder_attention_heads=8, encoder_ffn_dim=2048,
                        num_mel_bins=128, max_source_positions=1500),
      text_config=dict(model_type="qwen2", vocab_size=4096, hidden_size=512, intermediate_size=1536,
                       num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rms_norm_eps=1e-6,
                       tie_word_embeddings=False),
      audio_token_index=ids["<|AUDIO|>"], tie_word_embeddings=False)


def timed(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=2)
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args()
  torch.set_num_threads(max(1, torch.get_num_threads()))
  tok = tiny_hf.make_tokenizer()
  proc = tiny_hf.make_processor(tok)
  from transformers import Qwen2AudioForConditionalGeneration
  torch.manual_seed(0)
  ref = Qwen2AudioForConditionalGeneration(mid_config(tok)).eval()
  with tempfile.TemporaryDirectory() as d:
    ref.save_pretrained(f"{d}/hf")
    proc.save_pretrained(f"{d}/hf")
    convert(f"{d}/hf", f"{d}/jx")
    model = jaxalm.load(f"{d}/jx")
  inputs = tiny_hf.make_inputs(proc, args.batch, seed=0, audio_seconds=(30.0,))
  print(f"batch {args.batch}, sequence {inputs['input_ids'].shape[1]} tokens, 30 s audio, "
        f"{sum(p.numel() for p in ref.parameters()) / 1e6:.1f}M params, {jax.devices()[0].platform}")
  fwd = jax.jit(model.forward)
  t = time.perf_counter()
  fwd(model.params, **inputs).logits.block_until_ready()
  compile_s = time.perf_counter() - t
  ours = timed(lambda: fwd(model.params, **inputs).logits.block_until_ready(), args.repeats)
  tin = {k: torch.from_numpy(v) for k, v in inputs.items()}
  with torch.inference_mode():
    ref(**tin)
    theirs = timed(lambda: ref(**tin), args.repeats)
  valid = inputs["attention_mask"].astype(bool)
  with torch.inference_mode():
    err = np.abs(np.asarray(fwd(model.params, **inputs).logits) - ref(**tin).logits.numpy())[valid].max()
  print(f"jaxalm compile+first call: {compile_s:.2f} s")
  print(f"jaxalm forward:   {ours * 1e3:8.1f} ms (median of {args.repeats})")
  print(f"PyTorch forward:  {theirs * 1e3:8.1f} ms (median of {args.repeats}, eager, {torch.get_num_threads()} threads)")
  print(f"speed-up (PyTorch / jaxalm): {theirs / ours:.2f}x   max-abs logits difference (real tokens) {err:.2e}")


if __name__ == "__main__":
  main()
