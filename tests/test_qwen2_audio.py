"""Qwen2-Audio parity with transformers' PyTorch implementation and invariances."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import tiny_hf
from jaxalm.models import qwen2_audio
from jaxalm.nn import decoder, whisper
from jaxalm.nn.rope import rope_cos_sin


def torch_logits(model, inputs: dict) -> np.ndarray:
  with torch.no_grad():
    out = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()})
  return out.logits.float().numpy()


@functools.cache
def jitted(forward):
  return jax.jit(forward, static_argnames="capture")


def run(model, inputs: dict, **kw):
  return jitted(model.forward)(model.params, **inputs, **kw)


@pytest.mark.parametrize("name", sorted(tiny_hf.TINY_CONFIGS))
def test_logits_match_pytorch_fp32(tiny, batch, name):
  ours = np.asarray(run(tiny.model(name), batch).logits)
  ref = torch_logits(tiny.torch_model(name), batch)
  valid = batch["attention_mask"].astype(bool)
  assert ours.shape == ref.shape
  assert np.abs(ref[valid]).max() > 1.0  # logits are not trivially small
  assert np.abs(ours - ref)[valid].max() <= 1e-4


def test_text_only_matches_pytorch(tiny, processor):
  enc = processor.tokenizer(["Question: what is it?", "Answer with exactly one candidate, please."],
                            return_tensors="np", padding=True, padding_side="right")
  inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
  ours = np.asarray(run(tiny.model(), inputs).logits)
  ref = torch_logits(tiny.torch_model(), inputs)
  valid = inputs["attention_mask"].astype(bool)
  assert np.abs(ours - ref)[valid].max() <= 1e-4


def _hooked(module, fn):
  seen = {}

  def hook(mod, args, kwargs, out):
    seen["args"], seen["kwargs"], seen["out"] = args, kwargs, out
  handle = module.register_forward_hook(hook, with_kwargs=True)
  try:
    fn()
  finally:
    handle.remove()
  return seen


def _t2n(x):
  return x.detach().float().numpy()


def test_encoder_layer_matches_pytorch(tiny, batch):
  model, ref = tiny.model(), tiny.torch_model()
  layer = ref.model.audio_tower.layers[1]
  seen = _hooked(layer, lambda: torch_logits(ref, batch))
  x = _t2n(seen["args"][0])
  n_frames = batch["feature_attention_mask"].sum(-1)
  key_valid = np.arange(x.shape[1])[None] < whisper.conv_lengths(n_frames)[:, None]
  mask = np.broadcast_to(key_valid[:, None, :], (x.shape[0], x.shape[1], x.shape[1]))
  p = jax.tree.map(lambda a: a[1], model.params["audio_tower"]["layers"])
  out, _ = whisper._layer(model.config.audio, (), jnp.asarray(mask))(jnp.asarray(x), (p, {}))
  assert np.abs(np.asarray(out) - _t2n(seen["out"])).max() <= 1e-5


def test_projector_output_matches_pytorch(tiny, batch):
  model, ref = tiny.model(), tiny.torch_model()
  seen = _hooked(ref.model.multi_modal_projector, lambda: torch_logits(ref, batch))
  feats, lengths, _ = jax.jit(qwen2_audio.encode_audio, static_argnums=1)(
      model.params, model.config, batch["input_features"], batch["feature_attention_mask"])
  want = _t2n(seen["out"])
  expected_lengths = tiny_hf.n_audio_tokens(batch["feature_attention_mask"].sum(-1))
  np.testing.assert_array_equal(np.asarray(lengths), expected_lengths)
  for i, n in enumerate(expected_lengths):
    assert np.abs(np.asarray(feats)[i, :n] - want[i, :n]).max() <= 1e-5


def test_decoder_layer_matches_pytorch(tiny, batch):
  model, ref = tiny.model(), tiny.torch_model()
  layer = ref.model.language_model.layers[1]
  seen = _hooked(layer, lambda: torch_logits(ref, batch))
  x = _t2n(seen["args"][0] if seen["args"] else seen["kwargs"]["hidden_states"])
  cfg = model.config.text
  b, s, _ = x.shape
  positions = jnp.broadcast_to(jnp.arange(s), (b, s))
  cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
  valid = batch["attention_mask"].astype(bool)
  mask = jnp.asarray(valid[:, None, :] & np.tril(np.ones((s, s), bool))[None])
  p = jax.tree.map(lambda a: a[1], model.params["language_model"]["layers"])
  out, _ = decoder._layer(cfg, (), cos, sin, mask, 0)(jnp.asarray(x), (p, {}, None))
  hf_out = seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"]
  diff = np.abs(np.asarray(out) - _t2n(hf_out))
  assert diff[valid].max() <= 1e-5


def test_bfloat16_close_to_pytorch_by_kl(tiny, batch):
  ours = np.asarray(run(tiny.model("gqa", "bfloat16"), batch).logits, np.float64)
  ref16 = torch_logits(tiny.torch_model().to(torch.bfloat16), batch).astype(np.float64)
  tiny.torch_model().to(torch.float32)
  ref32 = torch_logits(tiny.torch_model(), batch).astype(np.float64)
  valid = batch["attention_mask"].astype(bool)

  def kl(p_logits, q_logits):
    lp = p_logits - np.logaddexp.reduce(p_logits, -1, keepdims=True)
    lq = q_logits - np.logaddexp.reduce(q_logits, -1, keepdims=True)
    return (np.exp(lp) * (lp - lq)).sum(-1)[valid].mean()

  kl_ours, kl_hf = kl(ref32, ours), kl(ref32, ref16)
  assert kl(ref16, ours) < 1e-2
  # Our bfloat16 run is no further from the fp32 reference than PyTorch's own bfloat16 run.
  assert kl_ours <= 2 * kl_hf + 1e-4, (kl_ours, kl_hf)


def test_scan_equals_unrolled(tiny, batch):
  model = tiny.model()
  unrolled = jax.jit(functools.partial(qwen2_audio.forward, cfg=model.config.replace(scan_layers=False)))
  a = np.asarray(run(model, batch).logits)
  b = np.asarray(unrolled(model.params, **batch).logits)
  assert np.abs(a - b).max() <= 1e-5


def test_batch_equals_each_item_alone(tiny, batch):
  model = tiny.model()
  full = np.asarray(run(model, batch).logits)
  for i in range(len(batch["input_ids"])):
    n = int(batch["attention_mask"][i].sum())
    one = {k: v[i:i + 1] for k, v in batch.items()}
    one["input_ids"], one["attention_mask"] = one["input_ids"][:, :n], one["attention_mask"][:, :n]
    alone = np.asarray(run(model, one).logits)
    assert np.abs(alone[0] - full[i, :n]).max() <= 1e-5


def test_left_padding_with_default_positions_equals_unpadded(tiny, batch):
  model = tiny.model()
  i = 0
  n = int(batch["attention_mask"][i].sum())
  pad = 5
  one = {k: v[i:i + 1] for k, v in batch.items()}
  ids = np.concatenate([np.zeros((1, pad), np.int64), one["input_ids"][:, :n]], 1)
  mask = np.concatenate([np.zeros((1, pad), np.int64), np.ones((1, n), np.int64)], 1)
  left = np.asarray(run(model, {**one, "input_ids": ids, "attention_mask": mask}).logits)[0, pad:]
  plain = np.asarray(run(model, {**one, "input_ids": one["input_ids"][:, :n],
                                 "attention_mask": one["attention_mask"][:, :n]}).logits)[0]
  assert np.abs(left - plain).max() <= 1e-5


def test_cached_decoding_equals_full_forward(tiny, batch):
  model = tiny.model()
  full = np.asarray(run(model, batch).logits)
  b, s = batch["input_ids"].shape
  split = s - 6
  cache = model.init_cache(b, s)
  first = {k: v for k, v in batch.items()}
  first["input_ids"], first["attention_mask"] = batch["input_ids"][:, :split], batch["attention_mask"][:, :split]
  out = run(model, first, cache=cache)
  got = [np.asarray(out.logits)]
  cache = out.cache
  for t in range(split, s):
    step = {"input_ids": batch["input_ids"][:, t:t + 1], "attention_mask": batch["attention_mask"][:, t:t + 1]}
    out = run(model, step, cache=cache)
    cache = out.cache
    got.append(np.asarray(out.logits))
  got = np.concatenate(got, axis=1)
  valid = batch["attention_mask"].astype(bool)
  assert np.abs(got - full)[valid].max() <= 1e-5


def test_greedy_generation_matches_pytorch(tiny, processor):
  from jaxalm.generation import generate
  inputs = tiny_hf.make_inputs(processor, 1, seed=3, audio_seconds=(1.3,))
  model, ref = tiny.model(), tiny.torch_model()
  ours = np.asarray(generate(model, inputs, max_new_tokens=8))
  with torch.no_grad():
    hf = ref.generate(**{k: torch.from_numpy(v) for k, v in inputs.items()}, max_new_tokens=8, do_sample=False,
                      eos_token_id=None, min_new_tokens=8)
  np.testing.assert_array_equal(ours[0], hf[0, inputs["input_ids"].shape[1]:].numpy())


def test_eval_shape_of_real_7b_matches_hf_parameter_count():
  from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration
  hf_cfg = Qwen2AudioConfig(
      audio_config=dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                        num_mel_bins=128, max_source_positions=1500),
      text_config=dict(model_type="qwen2", vocab_size=156032, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=8192),
      audio_token_index=151646)
  with torch.device("meta"):
    hf = Qwen2AudioForConditionalGeneration(hf_cfg)
  hf_count = sum(p.numel() for p in hf.parameters())
  cfg = qwen2_audio.Qwen2AudioConfig.from_hf(hf_cfg.to_dict())
  from jaxalm.nn import params
  shapes = params.shapes(qwen2_audio.spec(cfg), jnp.bfloat16)
  abstract = jax.eval_shape(
      lambda p: qwen2_audio.forward(p, cfg, jnp.zeros((1, 16), jnp.int32)).logits, shapes)
  assert abstract.shape == (1, 16, 156032)
  ours = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  assert ours == hf_count
  assert 8.0e9 < ours < 8.5e9
