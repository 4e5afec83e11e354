"""Cost of branch scoring on the mid-size random Qwen2-Audio model, all figures in one run.

For each audio length (10 s and 30 s by default), on a batch of `--items` MCR-Bench-style
items with `--candidates` candidates:
  1. joint alone vs joint + same_audio through `Scorer.score_plans` (target: <= 1.2x at 30 s);
  2. shared prefix (`score_rows`, as in 1) vs naive batching (`score_full`: every row is the
     whole padded prompt + label, audio encoder included, all rows in one jitted call);
  3. items per second vs a transformers PyTorch loop doing the same scoring (one HF forward
     per item x branch x candidate, label log-probs summed), and a variant batching the
     candidates of a branch; the torch scores are checked against ours once.
Compile (first call) times are reported apart; steady-state times are medians of
`--repeats` interleaved calls (`--slow-repeats` for the naive and torch paths). Inputs
(tokens, log-mel features) are prepared before timing, for both libraries.

  python bench/branch_scoring.py [--items 2] [--candidates 2] [--seconds 10 30] [--repeats 3]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tiny_hf  # noqa: E402
from forward_vs_pytorch import mid_config  # noqa: E402

import jaxalm  # noqa: E402
from jaxalm.branches import Scorer  # noqa: E402
from jaxalm.converters import convert  # noqa: E402
from jaxalm.data.schema import Item  # noqa: E402
from jaxalm.scoring import score_full  # noqa: E402

CANDIDATES = ("dog", "rain", "the bell", "a car engine")
BRANCHES = ("joint", "same_audio")


def make_items(n: int, seconds: float, n_cand: int):
  """`n` items with `seconds` of speech-like audio each, and {path: waveform}."""
  items, waves = [], {}
  for i in range(n):
    path = f"mem://{seconds:g}s-{i}"
    waves[path] = tiny_hf.make_audio(seconds, seed=100 + i)
    items.append(Item(
        id=f"{seconds:g}s-{i}", modality="audio", media=path, question="What is the sound in the audio?",
        candidates=CANDIDATES[:n_cand], answer="dog", text_answer="rain",
        evidence={"adversarial": "The recording was labelled as rain.", "faithful": "A listener heard a dog."},
        benchmark="mcr-bench"))
  return items, waves


def timed(fns: dict, repeats: int, warm: bool = True) -> tuple[dict, dict, dict]:
  """First-call seconds, median wall seconds and median process CPU seconds of `repeats`
  later calls, each {name: s}. Calls are interleaved (a, b, a, b, ...) so that load from
  other processes hits them alike; `warm=False` skips the untimed first call."""
  first, wall, cpu = {}, {k: [] for k in fns}, {k: [] for k in fns}
  for k, fn in fns.items() if warm else ():
    t = time.perf_counter()
    fn()
    first[k] = time.perf_counter() - t
  for _ in range(repeats):
    for k, fn in fns.items():
      t, c = time.perf_counter(), time.process_time()
      fn()
      wall[k].append(time.perf_counter() - t)
      cpu[k].append(time.process_time() - c)
  median = lambda d: {k: float(np.median(v)) for k, v in d.items()}  # noqa: E731
  return first, median(wall), median(cpu)


def whole_rows(plans):
  """Every row of the plans as (item index, branch, candidate, whole ids, label start, label len, media)."""
  out = []
  for j, plan in enumerate(plans):
    r = 0
    for branch in plan.branches:
      for c in range(len(plan.item.candidates)):
        slot, ids, start, n = plan.rows[r]
        out.append((j, branch, c, plan.prefix_ids[slot] + ids, len(plan.prefix_ids[slot]) + start, n,
                    plan.media[slot]))
        r += 1
  return out


def full_inputs(model, rows, pad: int):
  """Right-padded whole prompts + labels, one audio per row, for `score_full`."""
  length = -(-max(len(r[3]) for r in rows) // 16) * 16
  inputs = {"input_ids": np.full((len(rows), length), pad, np.int32),
            "attention_mask": np.zeros((len(rows), length), np.int32)}
  for i, r in enumerate(rows):
    inputs["input_ids"][i, :len(r[3])] = r[3]
    inputs["attention_mask"][i, :len(r[3])] = 1
  inputs.update(model.family.collate_media([r[6] for r in rows]))
  start = np.array([r[4] for r in rows], np.int32)
  n = np.array([r[5] for r in rows], np.int32)
  return inputs, start, n, -(-int(n.max()) // 4) * 4


def torch_scores(ref, rows, pad: int, batch_candidates: bool) -> np.ndarray:
  """Summed label log-probs with HF forwards: one per row, or one per (item, branch)."""
  groups = {}
  for i, r in enumerate(rows):
    groups.setdefault((r[0], r[1]) if batch_candidates else i, []).append(i)
  out = np.zeros(len(rows))
  with torch.inference_mode():
    for idx in groups.values():
      length = max(len(rows[i][3]) for i in idx)
      ids = torch.full((len(idx), length), pad, dtype=torch.long)
      mask = torch.zeros((len(idx), length), dtype=torch.long)
      for b, i in enumerate(idx):
        ids[b, :len(rows[i][3])] = torch.tensor(rows[i][3])
        mask[b, :len(rows[i][3])] = 1
      media = rows[idx[0]][6]
      feats = torch.from_numpy(np.asarray(media["input_features"]))[None].expand(len(idx), -1, -1)
      fmask = torch.from_numpy(np.asarray(media["feature_attention_mask"]))[None].expand(len(idx), -1)
      logits = ref(input_ids=ids, attention_mask=mask, input_features=feats, feature_attention_mask=fmask).logits
      logp = torch.log_softmax(logits.float(), dim=-1)
      for b, i in enumerate(idx):
        _, _, _, whole, start, n, _ = rows[i]
        tok = torch.tensor(whole[start:start + n])
        out[i] = logp[b, start - 1:start - 1 + n].gather(-1, tok[:, None]).sum().item()
  return out


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--items", type=int, default=2, help="items per scoring batch")
  ap.add_argument("--candidates", type=int, default=2, help="candidates per item (2 to 4)")
  ap.add_argument("--seconds", type=float, nargs="+", default=(10.0, 30.0))
  ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the jaxalm shared-prefix calls")
  ap.add_argument("--slow-repeats", type=int, default=1, help="timed repeats of the naive and torch paths")
  ap.add_argument("--no-torch", action="store_true")
  args = ap.parse_args()
  tok = tiny_hf.make_tokenizer()
  proc = tiny_hf.make_processor(tok)
  from transformers import Qwen2AudioForConditionalGeneration
  torch.manual_seed(0)
  ref = Qwen2AudioForConditionalGeneration(mid_config(tok))
  tiny_hf._init_weights(ref, seed=0)  # non-trivial weights, so that branches score differently
  ref.eval()
  with tempfile.TemporaryDirectory() as d:
    ref.save_pretrained(f"{d}/hf")
    proc.save_pretrained(f"{d}/hf")
    convert(f"{d}/hf", f"{d}/jx")
    model = jaxalm.load(f"{d}/jx")
    model.tokenizer  # reads the processor before the directory goes
  pad = tok.pad_token_id
  full = jax.jit(score_full, static_argnames=("forward", "max_label_len"))
  print(f"mid-size Qwen2-Audio, {sum(p.numel() for p in ref.parameters()) / 1e6:.1f}M params, "
        f"{jax.devices()[0].platform}, torch {torch.get_num_threads()} threads; {args.items} items x "
        f"{args.candidates} candidates per batch", flush=True)
  results = []
  for seconds in args.seconds:
    items, waves = make_items(args.items, seconds, args.candidates)
    res = {"seconds": seconds}
    # 1. joint alone (a) vs joint + same_audio (b), through Scorer.score_plans.
    calls = {}
    for key, branches in (("a", ("joint",)), ("b", BRANCHES)):
      scorer = Scorer(model, branches, batch_size=args.items, load_media=waves.__getitem__)
      plans = [scorer.plan(it) for it in items]
      calls[key] = lambda scorer=scorer, plans=plans: scorer.score_plans(plans)
    first, med, cpu = timed(calls, args.repeats)
    res.update(med, compile_a=first["a"], compile_b=first["b"], cpu_a=cpu["a"], cpu_b=cpu["b"])
    ours = np.concatenate([per[b] for per in calls["b"]() for b in BRANCHES])
    prefix, rows, _ = scorer.collate(plans)  # the joint + same_audio batch
    res.update(prefix_len=prefix["input_ids"].shape[1], row_len=rows["input_ids"].shape[1], rows=len(ours))
    # 2. naive batching of the same rows: whole prompt + label per row, one call.
    wrows = whole_rows(plans)
    inputs, start, n, max_label = full_inputs(model, wrows, pad)
    inputs, start, n = jax.device_put((inputs, start, n))
    naive = lambda: full(model.params, inputs, start, n, forward=model.forward,  # noqa: E731
                         max_label_len=max_label).block_until_ready()
    first, med, _ = timed({"naive": naive}, args.slow_repeats)
    res.update(med, compile_naive=first["naive"], naive_len=inputs["input_ids"].shape[1],
               naive_diff=float(np.abs(np.asarray(naive()) - ours).max()))
    # 3. transformers PyTorch: a forward per row, or per (item, branch) with the candidates batched.
    if not args.no_torch:
      torch_scores(ref, wrows[:1], pad, False)  # warm-up: one forward
      got = {}
      calls = {k: lambda k=k, b=b: got.__setitem__(k, torch_scores(ref, wrows, pad, b))
               for k, b in (("torch_loop", False), ("torch_batched", True))}
      res.update(timed(calls, args.slow_repeats, warm=False)[1])
      res["torch_diff"] = float(max(np.abs(v - ours).max() for v in got.values()))
    results.append(res)
    print(f"  {seconds:g} s done: prefix {res['prefix_len']} tokens, {res['rows']} rows of {res['row_len']} "
          f"(naive: {res['naive_len']} tokens per row)", flush=True)
  report(results, args)


def report(results, args) -> None:
  """Prints the tables."""
  n = args.items
  print(f"\nCompile + first call (s):\n{'audio':>6} {'joint':>8} {'joint+same':>11} {'naive':>8}")
  for r in results:
    print(f"{r['seconds']:>5g}s {r['compile_a']:8.1f} {r['compile_b']:11.1f} {r['compile_naive']:8.1f}")
  print(f"\n1. Branch cost, batch of {n} items (Scorer.score_plans, ms, median of {args.repeats}):")
  print(f"{'audio':>6} {'(a) joint':>10} {'(b) joint+same':>15} {'(b)/(a)':>8}   CPU s: {'(a)':>6} {'(b)':>6} {'(b)/(a)':>8}")
  for r in results:
    print(f"{r['seconds']:>5g}s {r['a'] * 1e3:10.0f} {r['b'] * 1e3:15.0f} {r['b'] / r['a']:8.2f}          "
          f"{r['cpu_a']:6.2f} {r['cpu_b']:6.2f} {r['cpu_b'] / r['cpu_a']:8.2f}")
  print(f"\n2. Shared prefix (b) vs naive batching (score_full, one call), joint+same_audio rows (ms):")
  print(f"{'audio':>6} {'rows':>5} {'shared':>8} {'naive':>8} {'naive/shared':>13} {'max|diff|':>10}")
  for r in results:
    print(f"{r['seconds']:>5g}s {r['rows']:5d} {r['b'] * 1e3:8.0f} {r['naive'] * 1e3:8.0f} "
          f"{r['naive'] / r['b']:13.1f} {r['naive_diff']:10.1e}")
  if args.no_torch:
    return
  print("\n3. Items per second, joint+same_audio: jaxalm (b) vs transformers PyTorch eager fp32")
  print(f"{'audio':>6} {'jaxalm':>8} {'torch loop':>11} {'torch batched':>14} {'vs loop':>8} {'vs batched':>11}")
  for r in results:
    ours, loop, batched = n / r["b"], n / r["torch_loop"], n / r["torch_batched"]
    print(f"{r['seconds']:>5g}s {ours:8.2f} {loop:11.3f} {batched:14.3f} {ours / loop:7.1f}x {ours / batched:10.1f}x")
  diff = max(r["torch_diff"] for r in results)
  print(f"max |torch - jaxalm| over all candidate scores: {diff:.1e} "
        f"({'within' if diff <= 1e-3 else 'NOT within'} 1e-3)")


if __name__ == "__main__":
  main()
