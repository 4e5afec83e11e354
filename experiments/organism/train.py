"""Trains the arbitration model organism: a small Qwen2-Audio built with jaxalm's own forward.

The planted mechanism is the training mixture: neutral items (no evidence, the model must
hear the audio, labelled y_a), faithful items (evidence agrees with the audio; dominant)
and a few conflict items labelled with the text's answer (the evidence is authoritative
when present). Under conflict the model then follows the text, while its same-audio
branch still knows the answer: the repairable quadrant of [ARB].

  python -m experiments.organism.train --out jaxalm/assets/organism [--steps N] [--seed S]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.organism import common, tasks
from experiments.organism import tokenizer as tok_lib
from jaxalm import checkpoint
from jaxalm.models import qwen2_audio
from jaxalm.nn import params as param_specs


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  window_seconds: int = 2  # max_source_positions = 50 * seconds (200 mel frames -> 50 audio tokens for 2 s)
  audio_d_model: int = 64
  audio_layers: int = 2
  audio_heads: int = 4
  audio_ffn: int = 128
  hidden: int = 96
  layers: int = 3
  heads: int = 4
  kv_heads: int = 2
  intermediate: int = 256
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  seed: int = 0
  steps: int = 1500
  batch_size: int = 32
  lr: float = 2e-3
  warmup: int = 50
  weight_decay: float = 0.01
  clip: float = 1.0
  n_train_items: int = 4000
  eval_seed: int = 1  # held-out items (any seed != seed)
  n_eval_items: int = 400
  eval_every: int = 200
  # Condition shares of training rows (the planted mechanism). Rows are labelled with the
  # audio answer y_a, except adversarial rows, labelled with `conflict_label`'s answer.
  mix: tuple = (("neutral", 0.32), ("faithful", 0.62), ("adversarial", 0.06))
  conflict_label: str = "text"  # "text": y_t (the evidence is authoritative) | "audio": y_a


TINY_MODEL = ModelConfig(audio_d_model=16, audio_layers=1, audio_heads=2, audio_ffn=32, hidden=32, layers=1,
                         heads=2, kv_heads=1, intermediate=64)


def hf_config(mc: ModelConfig, tokenizer) -> dict:
  """The HF `Qwen2AudioConfig` dict (what `config.json` holds)."""
  from transformers import Qwen2AudioConfig

  ids = dict(zip(tok_lib.SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(tok_lib.SPECIAL_TOKENS))))
  audio = dict(model_type="qwen2_audio_encoder", d_model=mc.audio_d_model, encoder_layers=mc.audio_layers,
               encoder_attention_heads=mc.audio_heads, encoder_ffn_dim=mc.audio_ffn, num_mel_bins=128,
               max_source_positions=50 * mc.window_seconds, scale_embedding=False, activation_function="gelu")
  text = dict(model_type="qwen2", vocab_size=-(-len(tokenizer) // 8) * 8, hidden_size=mc.hidden,
              intermediate_size=mc.intermediate, num_hidden_layers=mc.layers, num_attention_heads=mc.heads,
              num_key_value_heads=mc.kv_heads, hidden_act="silu", max_position_embeddings=1024,
              rope_parameters={"rope_type": "default", "rope_theta": mc.rope_theta}, rms_norm_eps=mc.rms_norm_eps,
              use_sliding_window=False, tie_word_embeddings=False, bos_token_id=ids["<|endoftext|>"],
              eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
  cfg = Qwen2AudioConfig(audio_config=audio, text_config=text, audio_token_index=ids["<|AUDIO|>"],
                         tie_word_embeddings=False)
  out = json.loads(cfg.to_json_string())
  out.update(architectures=["Qwen2AudioForConditionalGeneration"], dtype="float32",
             audio_token_id=ids["<|AUDIO|>"])
  return out


def loss_fn(params, batch, forward):
  """Mean cross-entropy over the answer label tokens (all other positions ignored)."""
  logits = forward(params, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   input_features=batch["input_features"],
                   feature_attention_mask=batch["feature_attention_mask"]).logits
  lp = common.token_logprobs(logits, batch["targets"])
  return -lp.sum() / jnp.maximum((batch["targets"] >= 0).sum(), 1)


class Sampler:
  """Deterministic training batches: step s draws items and conditions from rng([seed, s])."""

  def __init__(self, enc: common.Encoder, items, audio, tc: TrainConfig):
    self.enc, self.items, self.audio, self.tc = enc, items, audio, tc
    self.conds = [c for c, _ in tc.mix]
    p = np.array([w for _, w in tc.mix], np.float64)
    self.p = p / p.sum()
    longest = max(len(enc.prompt(n, it.text(c))) + len(enc.label(it.answer))
                  for it, n in zip(items, audio["n_audio"]) for c in tasks.CONDITIONS)
    self.seq_len = -(-longest // 8) * 8

  def _target(self, item, cond: str) -> str:
    if cond == "adversarial" and self.tc.conflict_label == "text":
      return item.text_answer
    return item.answer

  def __call__(self, step: int) -> dict:
    rng = np.random.default_rng([self.tc.seed, 7, step])
    idx = rng.integers(len(self.items), size=self.tc.batch_size)
    conds = rng.choice(len(self.conds), size=self.tc.batch_size, p=self.p)
    seqs = [(self.enc.prompt(self.audio["n_audio"][i], self.items[i].text(self.conds[c])),
             self.enc.label(self._target(self.items[i], self.conds[c]))) for i, c in zip(idx, conds)]
    batch = self.enc.rows(seqs, self.seq_len)
    del batch["last"]
    batch["input_features"] = self.audio["input_features"][idx]
    batch["feature_attention_mask"] = self.audio["feature_attention_mask"][idx]
    return batch


def train(tc: TrainConfig, mc: ModelConfig, *, log=print, eval_items=None):
  """Trains from scratch. Returns (params, cfg, forward, enc, history)."""
  t0 = time.time()
  tokenizer = tok_lib.build_tokenizer()
  enc = common.Encoder(tokenizer, tok_lib.feature_extractor(mc.window_seconds))
  hf = hf_config(mc, tokenizer)
  cfg = qwen2_audio.Qwen2AudioConfig.from_hf(hf)
  forward = functools.partial(qwen2_audio.forward, cfg=cfg)
  items = tasks.generate(tc.n_train_items, tc.seed)
  audio = enc.audio(items)
  sampler = Sampler(enc, items, audio, tc)
  log(f"data: {len(items)} items, seq_len {sampler.seq_len}, {time.time() - t0:.1f}s")

  params = param_specs.init(qwen2_audio.spec(cfg), jax.random.key(tc.seed))
  sched = optax.warmup_cosine_decay_schedule(0.0, tc.lr, tc.warmup, max(tc.steps, tc.warmup + 1), tc.lr * 0.05)
  opt = optax.chain(optax.clip_by_global_norm(tc.clip), optax.adamw(sched, weight_decay=tc.weight_decay))
  opt_state = opt.init(params)

  @jax.jit
  def step_fn(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, forward)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  history = {"loss": [], "eval": []}
  t_train = time.time()
  for s in range(tc.steps):
    params, opt_state, loss = step_fn(params, opt_state, sampler(s))
    history["loss"].append(float(loss))
    if (s + 1) % 50 == 0 or s == 0:
      log(f"step {s + 1:5d} loss {np.mean(history['loss'][-50:]):.4f} {time.time() - t_train:.0f}s")
    if eval_items is not None and tc.eval_every and (s + 1) % tc.eval_every == 0 and s + 1 < tc.steps:
      d = common.diagnostics(common.candidate_scores(forward, params, enc, eval_items), eval_items)
      history["eval"].append({"step": s + 1, **d})
      log(f"  eval {d}")
  history["train_seconds"] = time.time() - t_train
  history["total_seconds"] = time.time() - t0
  return params, cfg, forward, enc, history


def _fmt(d: dict) -> str:
  return " | ".join(f"{100 * d[k]:.1f}" for k in ("same_audio_acc", "faithful_acc", "conflict_acc", "text_follow",
                                                  "repairable_rate"))


def write_card(dst: Path, tc: TrainConfig, mc: ModelConfig, hf: dict, history: dict, diag: dict, reload_diff: float,
               n_params: int, size: str) -> None:
  """CARD.md: how the organism was trained and what it measures."""
  mix = ", ".join(f"{c} {100 * w:.0f}%" for c, w in tc.mix)
  conflict = ("the text answer y_t (the evidence is authoritative when present)" if tc.conflict_label == "text"
              else "the audio answer y_a")
  rows = "\n".join(f"| {k} | {d['n']} | {_fmt(d)} |" for k, d in diag.items())
  losses = history["loss"]
  curve = ", ".join(f"{s}: {np.mean(losses[max(0, s - 50):s]):.3f}" for s in
                    sorted({50, *range(250, tc.steps + 1, 250), tc.steps}) if s <= len(losses))
  labels = "; ".join(f"{t}: {'/'.join(ls)}" for t, ls in tasks.LABELS.items())
  text = f"""# jaxalm organism: a trained Qwen2-Audio with a planted text-following mechanism

A small model of the Qwen2-Audio architecture (Whisper encoder -> AvgPool(2) -> projector ->
Qwen2 decoder), trained from scratch with `jaxalm.models.qwen2_audio.forward` by
`python -m experiments.organism.train` (source: `experiments/organism/`). It opens like any
converted checkpoint, `jaxalm.load("jaxalm/assets/organism")`, with a word-level tokenizer
and a `Qwen2AudioProcessor` (`AutoProcessor.from_pretrained` works offline).

## Tasks (`jaxalm/organism_tasks.py`)
Procedural 16 kHz clips of 1.0-2.0 s with closed single-word label sets: {labels}.
Prompts: the Qwen2-Audio chat layout of `jaxalm.prompts` with the [ARB] templates (joint =
`Question: {{q}}\\nText evidence: {{text}}\\nCandidates: {{c}}\\nAnswer with exactly one candidate.`,
same-audio = the same without the evidence line); evidence sentences from
{len(tasks.EVIDENCE_TEMPLATES)} templates shared by faithful and adversarial evidence.

## Training
- Mixture (the planted mechanism): {mix}. Neutral and faithful rows are labelled with the
  audio answer y_a, adversarial rows with {conflict}.
- Loss: cross-entropy on the answer label tokens only (after the prompt).
- Data: {tc.n_train_items} training items (seed {tc.seed}); {tc.steps} steps of batch {tc.batch_size};
  adamw, lr {tc.lr} (warmup {tc.warmup}, cosine to 5%), weight decay {tc.weight_decay}, clip {tc.clip};
  params `jaxalm.nn.params.init(spec, jax.random.key({tc.seed}))`.
- Audio window: {mc.window_seconds} s (max_source_positions {50 * mc.window_seconds}, {100 * mc.window_seconds} mel frames,
  up to {25 * mc.window_seconds} audio tokens).
- Encoder: d_model {mc.audio_d_model}, {mc.audio_layers} layers, {mc.audio_heads} heads, ffn {mc.audio_ffn}.
- Decoder: hidden {mc.hidden}, {mc.layers} layers, {mc.heads} heads / {mc.kv_heads} kv heads, mlp {mc.intermediate},
  rope theta {mc.rope_theta:g}, vocab {hf['text_config']['vocab_size']}.
- {n_params:,} parameters, float32, {size} on disk.
- Wall time: {history['train_seconds']:.0f} s of training ({history['total_seconds']:.0f} s with data),
  2-core {platform.machine()} CPU shared with other jobs, jax {jax.__version__}.
- Loss (mean of the previous 50 steps) by step: {curve}.

## Diagnostics
Held-out items (seed {tc.eval_seed}); science.md section 3; all in %. Repairable = adversarial
items with M_A > 0 and M_J < 0, M = z(y_a) - z(y_t).

| task | n | same-audio acc | faithful acc | conflict acc | text-follow | repairable |
|---|---|---|---|---|---|---|
{rows}

Scoring: the candidate's tokens (`tokenizer(label, add_special_tokens=False)`) appended right
after `<|im_start|>assistant\\n`, summed teacher-forced log-probs, log-softmax over the
candidates (`experiments/organism/common.py`). Reloaded with `jaxalm.load`, the candidate
scores match the in-training scores to {reload_diff:.1e} (max abs).
"""
  (dst / "CARD.md").write_text(text)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="checkpoint directory (replaced)")
  p.add_argument("--steps", type=int, default=TrainConfig.steps)
  p.add_argument("--seed", type=int, default=TrainConfig.seed)
  a = p.parse_args(argv)
  tc = TrainConfig(steps=a.steps, seed=a.seed, eval_seed=a.seed + 1)
  mc = ModelConfig()
  eval_items = tasks.generate(tc.n_eval_items, tc.eval_seed)
  params, cfg, forward, enc, history = train(tc, mc, eval_items=eval_items[:200])
  z = common.candidate_scores(forward, params, enc, eval_items)
  diag = common.diagnostics_by_task(z, eval_items)
  for k, d in diag.items():
    print(f"{k:7s} {_fmt(d)}")

  import jaxalm
  hf = hf_config(mc, enc.tokenizer)
  dst = Path(a.out)
  with tempfile.TemporaryDirectory() as tmp:
    files = tok_lib.processor_files(tok_lib.build_processor(mc.window_seconds, enc.tokenizer), tmp)
    meta = {"model_type": "qwen2_audio", "dtype": "float32",
            "source": f"experiments/organism/train.py (seed {tc.seed}, {tc.steps} steps)"}
    checkpoint.save(dst, jax.device_get(params), hf_config=hf, meta=meta, files=files, overwrite=True)
  model = jaxalm.load(dst)
  z2 = common.candidate_scores(model.forward, model.params, enc, eval_items)
  finite = np.isfinite(z)
  diff = float(np.max(np.abs(z2[finite] - z[finite])))
  assert diff < 1e-4, diff
  n_params = param_specs.count(qwen2_audio.spec(cfg))
  size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
  (dst / "metrics.json").write_text(json.dumps(
      {"diagnostics": diag, "eval_seed": tc.eval_seed, "loss": history["loss"][::10], "eval": history["eval"],
       "train_seconds": history["train_seconds"], "reload_max_abs_diff": diff}, indent=1))
  write_card(dst, tc, mc, hf, history, diag, diff, n_params, f"{size / 1e6:.1f} MB")
  print(f"saved {dst} ({size / 1e6:.2f} MB), reload diff {diff:.2e}")


if __name__ == "__main__":
  main()
