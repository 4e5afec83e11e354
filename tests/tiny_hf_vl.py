"""Tiny random-weight Qwen3-VL checkpoints, built offline, for HF parity tests.

Deterministic: the same arguments give bit-identical tokenizers, weights, images and inputs.
Plain functions only (no pytest fixtures).

transformers 5.23 cannot build a `Qwen3VLProcessor` without torchvision (its video-processor
base class is a torchvision dummy, so the constructor's class check fails and
`AutoProcessor.from_pretrained` raises). `make_processor` and `load_processor` then build it
with that one check skipped, from the PIL image processor (`Qwen2VLImageProcessorPil`), the
tokenizer and the chat template; with torchvision installed they take the ordinary path.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from unittest import mock

import numpy as np

from tiny_hf import _learn_merges, _round_up

# Special tokens in Qwen2-VL's order (real ids 151643.., a subset).
SPECIAL_TOKENS = (
  "<|endoftext|>",
  "<|im_start|>",
  "<|im_end|>",
  "<|vision_start|>",
  "<|vision_end|>",
  "<|vision_pad|>",
  "<|image_pad|>",
  "<|video_pad|>",
)

# The Qwen3-VL-Instruct chat template as published, without its tool-calling and reasoning
# branches (identical output for system/user/assistant messages with text and images).
CHAT_TEMPLATE = (
  "{%- if messages[0].role == 'system' %}"
  "{{- '<|im_start|>system\\n' }}"
  "{%- if messages[0].content is string %}{{- messages[0].content }}"
  "{%- else %}{%- for content in messages[0].content %}{%- if 'text' in content %}{{- content.text }}"
  "{%- endif %}{%- endfor %}{%- endif %}"
  "{{- '<|im_end|>\\n' }}"
  "{%- endif %}"
  "{%- set image_count = namespace(value=0) %}"
  "{%- for message in messages %}"
  "{%- if message.role == 'user' or message.role == 'assistant' %}"
  "{{- '<|im_start|>' + message.role + '\\n' }}"
  "{%- if message.content is string %}{{- message.content }}"
  "{%- else %}{%- for content in message.content %}"
  "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
  "{%- set image_count.value = image_count.value + 1 %}"
  "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
  "<|vision_start|><|image_pad|><|vision_end|>"
  "{%- elif 'text' in content %}{{- content.text }}"
  "{%- endif %}{%- endfor %}{%- endif %}"
  "{{- '<|im_end|>\\n' }}"
  "{%- endif %}"
  "{%- endfor %}"
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

PATCH_SIZE = 16
MERGE_SIZE = 2
# Between 2x2 and 6x6 merged tokens per image (factor 32 pixels).
MIN_PIXELS = 32 * 32 * 4
MAX_PIXELS = 32 * 32 * 36

_CORPUS_HEAVY = """\
Describe the image. What is in the picture? Answer with the letter of the correct option.
Question: What color is the object in the image? Answer: red.
Candidates: (A) cat (B) dog (C) car (D) tree. The image shows a cat. Answer: A
The text says the picture shows a dog, but the image shows a cat. Which do you trust?
"""
_CORPUS_LIGHT = """\
How many people are in the photo? Is it indoors or outdoors? Read the text in the image.
The chart shows sales by month. The diagram has three parts. Count the objects.
According to the caption, the animal is a horse. According to the image, it is a zebra.
"""
_CORPUS = ("<|im_start|>user\n<|im_start|>assistant\n<|im_start|>system\n" * 8 + _CORPUS_HEAVY * 8
           + _CORPUS_LIGHT * 2 + "\n\n \n" * 4)


def make_tokenizer(n_merges: int = 400):
  """A Qwen2TokenizerFast (byte-level BPE, Qwen2 regex) with the Qwen-VL special tokens."""
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
  tok.eos_token = "<|im_end|>"
  ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
  assert ids == list(range(len(vocab), len(vocab) + len(SPECIAL_TOKENS))), ids
  return tok


def make_image_processor():
  """The PIL Qwen2-VL image processor with Qwen3-VL's settings and small min/max pixels."""
  from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

  return Qwen2VLImageProcessorPil(
    patch_size=PATCH_SIZE, temporal_patch_size=2, merge_size=MERGE_SIZE, image_mean=[0.5] * 3,
    image_std=[0.5] * 3, size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})


def _has_torchvision() -> bool:
  try:
    import torchvision  # noqa: F401
  except Exception:
    return False
  return True


def _processor(image_processor, tokenizer, chat_template):
  from transformers import Qwen3VLProcessor

  skip = contextlib.nullcontext() if _has_torchvision() else mock.patch.object(
    Qwen3VLProcessor, "check_argument_for_proper_class", lambda self, name, arg: type(arg))
  with skip:
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                            chat_template=chat_template)


def make_processor(tokenizer=None):
  """Qwen3VLProcessor: tiny tokenizer + small-image processor + the chat template."""
  tokenizer = make_tokenizer() if tokenizer is None else tokenizer
  return _processor(make_image_processor(), tokenizer, CHAT_TEMPLATE)


def save_processor(processor, dst) -> None:
  """processor.save_pretrained(dst); without torchvision, leaving out the absent video processor."""
  from transformers import Qwen3VLProcessor

  if _has_torchvision():
    processor.save_pretrained(dst)
    return
  with mock.patch.object(Qwen3VLProcessor, "get_attributes", classmethod(lambda cls: ["image_processor", "tokenizer"])):
    processor.save_pretrained(dst)


def load_processor(path):
  """The processor saved in a checkpoint dir (AutoProcessor when torchvision is there)."""
  from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

  if _has_torchvision():
    return AutoProcessor.from_pretrained(path)
  tok = AutoTokenizer.from_pretrained(path)
  return _processor(AutoImageProcessor.from_pretrained(path), tok, tok.chat_template)


# ----------------------------------------------------------------------------- configs

_VISION = dict(
  depth=4, hidden_size=32, hidden_act="gelu_pytorch_tanh", intermediate_size=64, num_heads=2,
  in_channels=3, patch_size=PATCH_SIZE, spatial_merge_size=MERGE_SIZE, temporal_patch_size=2,
  num_position_embeddings=36, deepstack_visual_indexes=[0, 2, 3],
)
_TEXT = dict(
  hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
  num_key_value_heads=2, head_dim=16, hidden_act="silu", rms_norm_eps=1e-6,
  max_position_embeddings=4096, attention_bias=False, attention_dropout=0.0,
  rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [4, 2, 2],
                   "mrope_interleaved": True},
)

# Override sets on top of _VISION / _TEXT ("vision", "text" and "top" keys).
TINY_CONFIGS = {
  # GQA 4/2, head_dim 16, untied (like 8B); DeepStack from vision layers 0, 2, 3 into
  # decoder layers 0, 1, 2 of 4; position table 6x6 (images of 4x4 to 12x12 patches).
  "gqa": dict(),
  # MHA with head_dim 32 and 6 layers' worth of frequencies; tied embeddings (like 2B);
  # unsorted DeepStack layers; 8x8 position table; 4 vision heads.
  "tied": dict(
    vision=dict(num_heads=4, num_position_embeddings=64, deepstack_visual_indexes=[2, 0]),
    text=dict(hidden_size=64, num_attention_heads=2, num_key_value_heads=2, head_dim=32, num_hidden_layers=3,
              rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                  "mrope_section": [6, 5, 5], "mrope_interleaved": True}),
    top=dict(tie_word_embeddings=True)),
}


def make_config(name: str = "gqa", tokenizer=None):
  """Qwen3VLConfig for TINY_CONFIGS[name] sized to the tiny tokenizer."""
  from transformers import Qwen3VLConfig

  tok = make_tokenizer() if tokenizer is None else tokenizer
  over = TINY_CONFIGS[name]
  vis = {**_VISION, **over.get("vision", {})}
  text = {**_TEXT, **over.get("text", {})}
  ids = dict(zip(SPECIAL_TOKENS, tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))))
  text.update(vocab_size=_round_up(len(tok)), bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
              pad_token_id=ids["<|endoftext|>"])
  vis["out_hidden_size"] = text["hidden_size"]
  top = {"tie_word_embeddings": False, **over.get("top", {})}
  cfg = Qwen3VLConfig(
    vision_config=vis, text_config=text, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
    vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], **top)
  return cfg


# ----------------------------------------------------------------------------- weights


def _init_weights(model, seed: int) -> None:
  """Re-draw every parameter (the Qwen2-Audio builder's rules, linear scale capped at 0.15)."""
  from tiny_hf import _init_weights as init
  init(model, seed, linear_max_std=0.15)


def build_model(name: str = "gqa", *, seed: int = 0, tokenizer=None):
  """Qwen3VLForConditionalGeneration with fresh random weights, eval mode, fp32, eager."""
  import torch
  from transformers import Qwen3VLForConditionalGeneration

  cfg = make_config(name, tokenizer)
  cfg._attn_implementation = "eager"
  for sub in (cfg.text_config, cfg.vision_config):
    sub._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = Qwen3VLForConditionalGeneration(cfg)
  _init_weights(model, seed)
  if cfg.tie_word_embeddings:
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
  return model.eval()


def make_checkpoint(dst_dir, name: str = "gqa", *, seed: int = 0, tokenizer=None) -> Path:
  """Writes a tiny checkpoint dir (safetensors, config, processor files); returns its path."""
  dst = Path(dst_dir)
  dst.mkdir(parents=True, exist_ok=True)
  assert not any(dst.iterdir()), f"{dst} is not empty"
  tok = make_tokenizer() if tokenizer is None else tokenizer
  model = build_model(name, seed=seed, tokenizer=tok)
  model.save_pretrained(dst)
  save_processor(make_processor(tok), dst)
  return dst


# ----------------------------------------------------------------------------- inputs

# (height, width) in pixels; the processor resizes to multiples of 32 within MIN/MAX_PIXELS.
DEFAULT_IMAGE_SIZES = ((64, 64), (100, 150), (200, 60), (40, 40), (130, 170))
DEFAULT_TEXTS = (
  "Describe the image.",
  "Question: What color is the object in the image? Answer with the letter. (A) red (B) blue",
  "The text says the picture shows a dog. Which do you trust?",
  "How many people are in the photo?",
)


def make_image(height: int, width: int, *, seed: int):
  """A PIL RGB image with smooth structure (gradients, blobs) and some noise."""
  from PIL import Image

  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  chans = []
  for _ in range(3):
    a, b, c = rng.uniform(-3, 3, size=3)
    cy, cx = rng.uniform(0, 1, size=2)
    chan = 0.5 + 0.25 * np.sin(a * x + b * y + c) + 0.3 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) * 20)
    chans.append(chan + 0.05 * rng.standard_normal((height, width)))
  img = np.clip(np.stack(chans, -1), 0, 1)
  return Image.fromarray((img * 255).astype(np.uint8), "RGB")


def make_prompt(processor, text: str, n_images: int = 1) -> str:
  """The chat prompt for `n_images` images followed by text."""
  content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
  msgs = [{"role": "user", "content": content}]
  return processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def make_inputs(processor, images_per_item=(1, 1, 2, 0), *, seed: int, image_sizes=DEFAULT_IMAGE_SIZES,
                texts=DEFAULT_TEXTS, padding_side: str = "right") -> dict:
  """A padded batch of chat prompts with images, as numpy arrays with HF names
  (input_ids, attention_mask, mm_token_type_ids, and pixel_values, image_grid_thw when any
  item has an image)."""
  prompts, images, k = [], [], 0
  for i, n in enumerate(images_per_item):
    prompts.append(make_prompt(processor, texts[i % len(texts)], n))
    for _ in range(n):
      h, w = image_sizes[k % len(image_sizes)]
      images.append(make_image(h, w, seed=seed * 1000 + k))
      k += 1
  out = processor(text=prompts, images=images or None, return_tensors="np", padding=True,
                  padding_side=padding_side)
  keys = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")
  res = {key: np.asarray(out[key]) for key in keys if key in out}
  if "pixel_values" in res:
    res["pixel_values"] = res["pixel_values"].astype(np.float32)
  return res
