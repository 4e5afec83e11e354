"""Checks of the tiny offline Qwen2-Audio checkpoints in tiny_hf.py."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_hf as th  # noqa: E402


@pytest.fixture(scope="module")
def tok():
  return th.make_tokenizer()


@pytest.fixture(scope="module")
def proc(tok):
  return th.make_processor(tok)


@pytest.fixture(scope="module")
def batch(proc):
  return th.make_inputs(proc, 4, seed=0)


def test_tokenizer(tok):
  from transformers import Qwen2TokenizerFast

  assert len(tok) < 1024
  ids = tok.convert_tokens_to_ids(list(th.SPECIAL_TOKENS))
  assert ids == list(range(ids[0], ids[0] + 6))
  assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
  for w in ("Question", " Question", "Answer", " evidence", "Candidates", " the", " audio",
            "Audio", " assistant", " helpful"):
    assert len(tok.tokenize(w)) <= 2, (w, tok.tokenize(w))
  # Qwen2's byte-level pre-tokenizer, not a simplified one.
  ref = Qwen2TokenizerFast().backend_tokenizer.pre_tokenizer
  text = "Audio 1: x\n\nQuestion:  what's   the 123 ok?\n"
  assert tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text) == ref.pre_tokenize_str(text)
  s = "The evidence says: ünïcode 42 \n\n ok"
  assert tok.decode(tok(s)["input_ids"]) == s


def test_prompt_layout(proc, tok):
  p = th.make_prompt(proc, "Question: hi")
  assert p == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
               "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nQuestion: hi<|im_end|>\n"
               "<|im_start|>assistant\n")
  ids = tok(p)["input_ids"]
  assert ids.count(tok.convert_tokens_to_ids("<|AUDIO|>")) == 1


def test_processor_expansion(batch, tok):
  ids, am = batch["input_ids"], batch["attention_mask"]
  feats, fam = batch["input_features"], batch["feature_attention_mask"]
  assert feats.shape == (4, 128, 3000) and feats.dtype == np.float32
  assert fam.shape == (4, 3000)
  L = fam.sum(-1)
  samples = [round(s * th.SAMPLING_RATE) for s in th.DEFAULT_SECONDS]
  assert L.tolist() == [math.ceil(n / 160) for n in samples]
  n_exp = (((L - 1) // 2 + 1) - 2) // 2 + 1
  assert n_exp.tolist() == [12, 32, 50, 750]
  audio_id = tok.convert_tokens_to_ids("<|AUDIO|>")
  assert (ids == audio_id).sum(-1).tolist() == n_exp.tolist()
  assert np.array_equal(th.n_audio_tokens(L), n_exp)
  # Right padding: ones then zeros, pads are <|endoftext|>.
  lens = am.sum(-1)
  assert np.array_equal(am, (np.arange(ids.shape[1]) < lens[:, None]).astype(am.dtype))
  assert (ids[am == 0] == tok.pad_token_id).all()
  # Contiguous run of audio tokens between audio_bos and audio_eos.
  bos, eos = tok.convert_tokens_to_ids(["<|audio_bos|>", "<|audio_eos|>"])
  for row, n in zip(ids, n_exp):
    start = int(np.argmax(row == bos)) + 1
    assert (row[start:start + n] == audio_id).all() and row[start + n] == eos


@pytest.mark.parametrize("name", sorted(th.TINY_CONFIGS))
def test_config_and_forward(name, tok, batch):
  model = th.build_model(name, tokenizer=tok)
  cfg = model.config
  tc, ac = cfg.text_config, cfg.audio_config
  assert cfg.audio_token_id == tok.convert_tokens_to_ids("<|AUDIO|>")
  assert len(tok) <= tc.vocab_size < len(tok) + 64
  assert ac.d_model == 32 and ac.max_source_positions == 1500 and ac.num_mel_bins == 128
  assert not cfg.tie_word_embeddings and not tc.tie_word_embeddings
  over = th.TINY_CONFIGS[name].get("text", {})
  if "rope_theta" in over:
    assert tc.rope_parameters["rope_theta"] == over["rope_theta"]
  assert tc.num_attention_heads % tc.num_key_value_heads == 0
  for n, p in model.named_parameters():
    assert p.std() > 0.005, n  # no constant (zeros/ones) tensors left
  assert not torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight)
  x = {k: torch.from_numpy(v) for k, v in batch.items()}
  with torch.no_grad():
    logits = model(**x).logits
  assert logits.shape == (*batch["input_ids"].shape, tc.vocab_size)
  assert torch.isfinite(logits).all()
  assert 0.3 < logits.std() < 10


def test_config_variety():
  cfgs = {n: th.make_config(n).text_config for n in th.TINY_CONFIGS}
  kinds = {(c.num_attention_heads, c.num_key_value_heads, c.hidden_size // c.num_attention_heads)
           for c in cfgs.values()}
  assert any(h == kv for h, kv, _ in kinds) and any(h > kv for h, kv, _ in kinds)
  assert len({d for _, _, d in kinds}) > 1
  assert len({c.rope_parameters["rope_theta"] for c in cfgs.values()}) > 1
  assert len({c.rms_norm_eps for c in cfgs.values()}) > 1


VARIANTS = {
  "new": dict(),
  "legacy": dict(names="legacy"),
  "new_sharded": dict(sharded=True),
  "legacy_sharded": dict(names="legacy", sharded=True),
  "pickle": dict(pickle=True),
  "bf16": dict(dtype="bfloat16"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_checkpoint_roundtrip(variant, tmp_path, tok, batch):
  from transformers import AutoProcessor

  kw = VARIANTS[variant]
  d = th.make_checkpoint(tmp_path / "ck", "mha", seed=3, **kw)
  files = sorted(p.name for p in d.iterdir())
  if kw.get("pickle"):
    assert "pytorch_model.bin" in files and not any(f.endswith(".safetensors") for f in files)
  elif kw.get("sharded"):
    assert "model.safetensors.index.json" in files
    assert sum(f.endswith(".safetensors") for f in files) > 2
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(th.read_state_dict(d))
  else:
    assert "model.safetensors" in files
  keys = set(th.read_state_dict(d))
  ref = th.build_model("mha", seed=3, tokenizer=tok)
  new = set(ref.state_dict())
  assert keys == ({th.to_legacy_name(k) for k in new} if kw.get("names") == "legacy" else new)
  assert {th.from_legacy_name(k) for k in keys} == new
  model = th.load_hf_model(d)  # asserts a clean loading report and weights == disk
  x = {k: torch.from_numpy(v[:1]) for k, v in batch.items()}  # 0.5 s item: 12 audio tokens
  x["input_ids"], x["attention_mask"] = x["input_ids"][:, :64], x["attention_mask"][:, :64]
  with torch.no_grad():
    got, want = model(**x).logits, ref(**x).logits
  if kw.get("dtype") == "bfloat16":
    assert torch.allclose(got, want, atol=0.5)
  else:
    assert torch.equal(got, want)
  p = AutoProcessor.from_pretrained(d)
  assert p.tokenizer.get_vocab() == tok.get_vocab()
  assert p.chat_template == th.CHAT_TEMPLATE


def test_load_detects_missing_weight(tmp_path):
  from safetensors.torch import load_file, save_file

  d = th.make_checkpoint(tmp_path / "ck", "gqa")
  sd = load_file(d / "model.safetensors")
  sd.pop("model.language_model.layers.0.self_attn.q_proj.bias")
  save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(AssertionError, match="missing_keys"):
    th.load_hf_model(d)


def test_deterministic(tmp_path):
  a = th.build_model("gqa", seed=7).state_dict()
  b = th.build_model("gqa", seed=7).state_dict()
  c = th.build_model("gqa", seed=8).state_dict()
  assert all(torch.equal(a[k], b[k]) for k in a)
  assert not torch.equal(a["lm_head.weight"], c["lm_head.weight"])
