"""Tiny random-weight Qwen2-Audio checkpoints, built offline, for HF parity tests.

Everything here is deterministic: the same arguments give bit-identical tokenizers,
weights and inputs. Plain functions only (no pytest fixtures).
"""

from __future__ import annotations

import collections
import functools
import json
from pathlib import Path

import numpy as np

SAMPLING_RATE = 16000

# Special tokens in Qwen2's order (real ids 151643..151648).
SPECIAL_TOKENS = (
  "<|endoftext|>",
  "<|im_start|>",
  "<|im_end|>",
  "<|AUDIO|>",
  "<|audio_bos|>",
  "<|audio_eos|>",
)

from jaxalm.prompts import QWEN2_AUDIO_CHAT_TEMPLATE as CHAT_TEMPLATE  # noqa: E402

PROMPT_PREFIX = (
  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
  "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
)
PROMPT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"

# Text the BPE merges are learned from: prompt vocabulary, weighted by repetition.
_CORPUS_HEAVY = """\
You are a helpful assistant.
Audio 1: Question: What is the sound in the audio? Answer: the audio.
Question: Which of the following best describes the audio clip?
Candidates: (A) speech (B) music (C) noise (D) silence
Answer with the letter of the correct option. Answer: A
The evidence in the audio suggests the answer. Based on the evidence, the answer is B.
Listen to the audio and answer the question. What does the speaker say?
"""
_CORPUS_LIGHT = """\
Describe the sound. Is there a dog barking, a bird singing, a car engine or rain?
The speaker is a man. The speaker is a woman. How many speakers are there?
Transcribe the speech in English. Caption the audio. Classify the sound event.
Options: yes, no. Choose one of the candidates. The correct answer is C.
Consider the text evidence and the audio evidence. Which source do you trust?
According to the text, the sound is a piano. According to the audio, it is a guitar.
Please respond with only the letter. Explain your reasoning briefly.
The emotion of the speaker is happy, sad, angry or neutral.
Where was this recorded: indoors, outdoors, in a street, in an office?
"""
_CORPUS_ROLES = "<|im_start|>system\n<|im_start|>user\n<|im_start|>assistant\n"
_CORPUS = _CORPUS_ROLES * 8 + _CORPUS_HEAVY * 8 + _CORPUS_LIGHT * 2 + "\n\n \n  \n" * 4


@functools.lru_cache(maxsize=4)
def _learn_merges(text: str, n_merges: int) -> tuple[tuple[str, str], ...]:
  """Plain BPE (count-ordered, ties broken lexicographically) over byte-level words."""
  from transformers import Qwen2TokenizerFast
  from transformers.convert_slow_tokenizer import bytes_to_unicode

  # An empty-merge tokenizer only to borrow Qwen2's exact pre-tokenizer.
  vocab = {u: i for i, u in enumerate(bytes_to_unicode().values())}
  pretokenize = Qwen2TokenizerFast(vocab=vocab, merges=[]).backend_tokenizer.pre_tokenizer
  counts = collections.Counter(w for w, _ in pretokenize.pre_tokenize_str(text))
  words = [(list(w), c) for w, c in sorted(counts.items())]
  merges = []
  for _ in range(n_merges):
    pairs = collections.Counter()
    for syms, c in words:
      for a, b in zip(syms[:-1], syms[1:]):
        pairs[a, b] += c
    if not pairs:
      break
    best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    if best[1] < 2:
      break
    (a, b), _ = best
    merges.append((a, b))
    for syms, _ in words:
      i = 0
      while i < len(syms) - 1:
        if syms[i] == a and syms[i + 1] == b:
          syms[i:i + 2] = [a + b]
        i += 1
  return tuple(merges)


def make_tokenizer(n_merges: int = 480):
  """A Qwen2TokenizerFast (byte-level BPE, Qwen2 regex) with ~600 tokens, offline."""
  from transformers import Qwen2TokenizerFast
  from transformers.convert_slow_tokenizer import bytes_to_unicode

  vocab = {u: i for i, u in enumerate(bytes_to_unicode().values())}
  merges = list(_learn_merges(_CORPUS, n_merges))
  for a, b in merges:
    vocab.setdefault(a + b, len(vocab))
  tok = Qwen2TokenizerFast(
    vocab=vocab, merges=merges, errors="replace", unk_token=None,
    bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    model_max_length=32768, padding_side="right", clean_up_tokenization_spaces=False,
  )
  tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
  tok.eos_token = "<|im_end|>"  # as in Qwen2(-Audio)-Instruct
  ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
  assert ids == list(range(len(vocab), len(vocab) + len(SPECIAL_TOKENS))), ids
  assert len(tok) < 1024, len(tok)
  return tok


def make_processor(tokenizer=None):
  """Qwen2AudioProcessor with a 128-mel Whisper front end and the Instruct template."""
  from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

  tokenizer = make_tokenizer() if tokenizer is None else tokenizer
  fe = WhisperFeatureExtractor(
    feature_size=128, sampling_rate=SAMPLING_RATE, hop_length=160, chunk_length=30,
    n_fft=400, padding_value=0.0, return_attention_mask=True,
  )
  return Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def n_audio_tokens(n_frames):
  """Audio tokens for L mel frames (L = feature_attention_mask.sum())."""
  return (((np.asarray(n_frames) - 1) // 2 + 1) - 2) // 2 + 1


# ----------------------------------------------------------------------------- configs

_AUDIO = dict(
  d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
  num_mel_bins=128, max_source_positions=1500, scale_embedding=False,
  activation_function="gelu", dropout=0.0, attention_dropout=0.0,
  activation_dropout=0.0, encoder_layerdrop=0.0,
)
_TEXT = dict(
  hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
  num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6, hidden_act="silu",
  max_position_embeddings=4096, use_sliding_window=False, attention_dropout=0.0,
  tie_word_embeddings=False,
)

# Override sets on top of _AUDIO / _TEXT ("audio" and "text" keys).
TINY_CONFIGS = {
  # Real Qwen2-Audio-7B shape: MHA, theta 1e4, eps 1e-5 (head_dim 8).
  "mha": dict(text=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                        num_key_value_heads=4, rope_theta=1e4, rms_norm_eps=1e-5)),
  # GQA 4 heads / 2 kv heads, head_dim 16, theta 1e6, eps 1e-6.
  "gqa": dict(text=dict()),
  # MQA-like: 3 heads, 1 kv head, head_dim 16; encoder with 2 heads (head_dim 16).
  "mqa": dict(audio=dict(encoder_attention_heads=2),
              text=dict(hidden_size=48, intermediate_size=96, num_attention_heads=3,
                        num_key_value_heads=1, rope_theta=1e5, rms_norm_eps=1e-5)),
  # Many small heads: 8 heads / 2 kv heads (4 per group), head_dim 8, large eps.
  "wide": dict(text=dict(num_attention_heads=8, num_key_value_heads=2,
                         rope_theta=1e4, rms_norm_eps=1e-4)),
}


def _round_up(n: int, m: int = 64) -> int:
  return (n + m - 1) // m * m


def make_config(name: str = "gqa", tokenizer=None):
  """Qwen2AudioConfig for TINY_CONFIGS[name] sized to the tiny tokenizer."""
  from transformers import Qwen2AudioConfig

  tok = make_tokenizer() if tokenizer is None else tokenizer
  over = TINY_CONFIGS[name]
  audio = {**_AUDIO, **over.get("audio", {})}
  text = {**_TEXT, **over.get("text", {})}
  theta = text.pop("rope_theta")
  ids = dict(zip(SPECIAL_TOKENS, tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))))
  text.update(
    model_type="qwen2", vocab_size=_round_up(len(tok)),
    rope_parameters={"rope_type": "default", "rope_theta": theta},
    bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
    pad_token_id=ids["<|endoftext|>"],
  )
  audio["model_type"] = "qwen2_audio_encoder"
  cfg = Qwen2AudioConfig(
    audio_config=audio, text_config=text, audio_token_index=ids["<|AUDIO|>"],
    tie_word_embeddings=False,
  )
  assert cfg.audio_token_id == ids["<|AUDIO|>"]
  assert cfg.text_config.rope_parameters["rope_theta"] == theta
  return cfg


# ----------------------------------------------------------------------------- weights


def _init_weights(model, seed: int, *, linear_max_std: float = 0.1) -> None:
  """Re-draw every parameter: non-trivial values, activations kept O(1).

  Shared by the tiny Qwen2-Audio and Qwen3-VL builders; `linear_max_std` caps the
  1/sqrt(fan_in) scale of linear weights."""
  import torch
  from torch import nn

  g = torch.Generator().manual_seed(seed)
  done = set()

  def draw(p, mean, std):
    p.copy_(mean + std * torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype))

  with torch.no_grad():
    for mname, mod in sorted(model.named_modules()):
      own = dict(mod.named_parameters(recurse=False))
      if not own:
        continue
      kind = type(mod).__name__
      if isinstance(mod, nn.Linear):
        std = 0.2 if mname == "lm_head" else float(np.clip(mod.in_features ** -0.5, 0.02, linear_max_std))
        draw(mod.weight, 0.0, std)
        if mod.bias is not None:
          draw(mod.bias, 0.0, 0.05)
      elif isinstance(mod, (nn.Conv1d, nn.Conv3d)):
        fan_in = mod.weight[0].numel()
        draw(mod.weight, 0.0, float(np.clip(fan_in ** -0.5, 0.02, 0.1)))
        draw(mod.bias, 0.0, 0.05)
      elif isinstance(mod, nn.Embedding):
        std = 0.2 if mname.endswith(("embed_positions", "pos_embed")) else 0.5
        draw(mod.weight, 0.0, std)
      elif isinstance(mod, nn.LayerNorm) or kind.endswith("RMSNorm"):
        draw(mod.weight, 1.0, 0.1)
        if getattr(mod, "bias", None) is not None:
          draw(mod.bias, 0.0, 0.05)
      else:
        raise TypeError(f"no init rule for {mname} ({kind})")
      done.update(f"{mname}.{k}" if mname else k for k in own)
  missing = {n for n, _ in model.named_parameters()} - done
  assert not missing, missing


# ----------------------------------------------------------------------------- names


def to_legacy_name(key: str) -> str:
  """transformers-5 key -> the name published hub checkpoints use."""
  for new, old in (
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.audio_tower.", "audio_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
  ):
    if key.startswith(new):
      return old + key[len(new):]
  raise KeyError(key)


def from_legacy_name(key: str) -> str:
  """Hub (legacy) key -> transformers-5 key; new keys pass through."""
  for old, new in (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("audio_tower.", "model.audio_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
  ):
    if key.startswith(old):
      return new + key[len(old):]
  return key


def read_state_dict(path) -> dict:
  """All tensors of a checkpoint dir (any layout), keys as stored on disk."""
  import torch
  from safetensors.torch import load_file

  path = Path(path)
  files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
  assert files, f"no weights in {path}"
  out = {}
  for f in files:
    if f.suffix == ".bin":
      sd = torch.load(f, map_location="cpu", weights_only=True)
    else:
      sd = load_file(f)
    assert not set(sd) & set(out), f"duplicate keys in {f}"
    out.update(sd)
  return out


def _to_pickle(dst: Path) -> None:
  """Replace save_pretrained's safetensors (maybe sharded) by torch.save'd .bin files."""
  import torch
  from safetensors.torch import load_file

  index = dst / "model.safetensors.index.json"
  if index.exists():
    meta = json.loads(index.read_text())
    shards = sorted(set(meta["weight_map"].values()))
  else:
    meta, shards = None, ["model.safetensors"]
  renamed = {}
  for i, shard in enumerate(shards):
    sd = load_file(dst / shard)
    (dst / shard).unlink()
    out = "pytorch_model.bin" if meta is None else (
      f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin")
    torch.save(sd, dst / out)
    renamed[shard] = out
  if meta is not None:
    meta["weight_map"] = {k: renamed[v] for k, v in meta["weight_map"].items()}
    index.unlink()
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    (dst / "pytorch_model.bin.index.json").write_text(text)


# ----------------------------------------------------------------------------- checkpoints


def build_model(name: str = "gqa", *, seed: int = 0, tokenizer=None):
  """Qwen2AudioForConditionalGeneration with fresh random weights, eval mode, fp32."""
  import torch
  from transformers import Qwen2AudioForConditionalGeneration

  cfg = make_config(name, tokenizer)
  cfg._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = Qwen2AudioForConditionalGeneration(cfg)
  _init_weights(model, seed)
  return model.eval()


def make_checkpoint(dst_dir, name: str = "gqa", *, seed: int = 0, names: str = "new",
                    sharded: bool = False, pickle: bool = False,
                    dtype: str = "float32") -> Path:
  """Write a tiny checkpoint dir (weights, config, processor files); returns its path."""
  import torch

  assert names in ("new", "legacy"), names
  dst = Path(dst_dir)
  dst.mkdir(parents=True, exist_ok=True)
  assert not any(dst.iterdir()), f"{dst} is not empty"
  tok = make_tokenizer()
  proc = make_processor(tok)
  model = build_model(name, seed=seed, tokenizer=tok)
  model = model.to(getattr(torch, dtype))
  model.config.dtype = dtype
  # transformers 5 writes the hub (legacy) names by default (save_original_format=True).
  model.save_pretrained(dst, max_shard_size="150KB" if sharded else "50GB",
                        save_original_format=names == "legacy")
  proc.save_pretrained(dst)
  if pickle:
    _to_pickle(dst)
  return dst


def load_hf_model(path, *, check: bool = True):
  """from_pretrained(path) in fp32 eager eval mode; asserts every weight came from disk."""
  import torch
  from transformers import Qwen2AudioForConditionalGeneration

  model, info = Qwen2AudioForConditionalGeneration.from_pretrained(
    path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
  model.eval()
  if check:
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"loading report not clean: {bad}"
    disk = {from_legacy_name(k): v for k, v in read_state_dict(path).items()}
    sd = model.state_dict()
    assert set(disk) == set(sd), (set(disk) ^ set(sd))
    for k, v in disk.items():
      assert torch.equal(sd[k], v.to(torch.float32)), f"weight {k} differs from disk"
  return model


# ----------------------------------------------------------------------------- inputs

DEFAULT_SECONDS = (0.5, 1.3, 2.0, 30.0)
DEFAULT_TEXTS = (
  "Question: What is the sound in the audio?\nAnswer:",
  "The text says it is a dog barking. Candidates: (A) dog (B) rain. Answer with the letter.",
  "Which of the following best describes the audio clip? Consider the evidence.",
  "Transcribe the speech in English.",
)


def make_audio(seconds: float, *, seed: int) -> np.ndarray:
  """Speech-like float32 16 kHz waveform: gliding harmonics, syllable envelope, noise."""
  rng = np.random.default_rng(seed)
  n = int(round(seconds * SAMPLING_RATE))
  t = np.arange(n) / SAMPLING_RATE
  f0 = rng.uniform(90, 250) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
  phase = 2 * np.pi * np.cumsum(f0) / SAMPLING_RATE
  voiced = sum(rng.uniform(0.2, 1) / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
               for k in range(1, 9))
  env = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 2 * np.pi)))
  x = 0.3 * env * voiced / 3 + 0.02 * rng.standard_normal(n)
  return x.astype(np.float32)


def make_prompt(processor, text: str) -> str:
  """The Qwen2-Audio-Instruct chat prompt for one audio followed by text."""
  msgs = [{"role": "user", "content": [
    {"type": "audio", "audio_url": "placeholder.wav"}, {"type": "text", "text": text}]}]
  prompt = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
  assert prompt == PROMPT_PREFIX + text + PROMPT_SUFFIX, repr(prompt)
  return prompt


def make_inputs(processor, n_items: int, *, seed: int, audio_seconds=DEFAULT_SECONDS,
                texts=DEFAULT_TEXTS) -> dict:
  """Right-padded batch of chat prompts + audio, as numpy arrays with HF names."""
  audios = [make_audio(audio_seconds[i % len(audio_seconds)], seed=seed * 1000 + i)
            for i in range(n_items)]
  prompts = [make_prompt(processor, texts[i % len(texts)]) for i in range(n_items)]
  out = processor(text=prompts, audio=audios, sampling_rate=SAMPLING_RATE,
                  return_tensors="np", padding=True, padding_side="right")
  keys = ("input_ids", "attention_mask", "input_features", "feature_attention_mask")
  res = {k: np.asarray(out[k]) for k in keys}
  res["input_features"] = res["input_features"].astype(np.float32)
  return res
