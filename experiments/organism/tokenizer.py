"""A word-level tokenizer and Qwen2-Audio processor covering every organism prompt.

Pre-tokenisation: the chat special tokens are matched first (added tokens), then spaces
are dropped, `\\n` is its own token and punctuation is split off. The vocabulary is every
piece of the prompt corpus (chat layout, [ARB] templates, questions, labels, evidence).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from experiments.organism import tasks
from jaxalm import prompts
from jaxalm.prompts import QWEN2_AUDIO_CHAT_TEMPLATE

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
UNK = "<unk>"

CHAT_TEMPLATE = QWEN2_AUDIO_CHAT_TEMPLATE


def corpus() -> list[str]:
  """Every text an organism prompt can contain."""
  lay = prompts.layout("qwen2_audio")
  out = [lay.prefix(1), lay.suffix(""), lay.suffix("", with_media=False), "system user assistant"]
  for task, labels in tasks.LABELS.items():
    out += list(labels)
    for q in tasks.QUESTIONS[task]:
      out.append(tasks.prompt_text(q, labels, None))
      out += [tasks.prompt_text(q, labels, t.format(y=y)) for t in tasks.EVIDENCE_TEMPLATES for y in labels]
      out += [tasks.prompt_text(q, labels, t) for t in tasks.IRRELEVANT_TEMPLATES]
  return out


def _pre_tokenizer():
  from tokenizers import Regex, pre_tokenizers
  return pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(r"[^\S\n]+"), "removed"),
      pre_tokenizers.Split(Regex(r"\n"), "isolated"),
      pre_tokenizers.Punctuation("isolated"),
  ])


def vocabulary(texts=None) -> list[str]:
  """Special tokens, `<unk>`, then the sorted pieces of `texts` (default: `corpus()`)."""
  pre = _pre_tokenizer()
  pieces = set()
  for text in corpus() if texts is None else texts:
    for part in _split_special(text):
      if part not in SPECIAL_TOKENS:
        pieces.update(w for w, _ in pre.pre_tokenize_str(part))
  return list(SPECIAL_TOKENS) + [UNK] + sorted(pieces)


def _split_special(text: str) -> list[str]:
  import re
  return [p for p in re.split("(" + "|".join(re.escape(s) for s in SPECIAL_TOKENS) + ")", text) if p]


def build_tokenizer():
  """PreTrainedTokenizerFast over a tokenizers WordLevel model (eos <|im_end|>, pad <|endoftext|>)."""
  from tokenizers import AddedToken, Tokenizer, decoders, models
  from transformers import PreTrainedTokenizerFast

  vocab = {w: i for i, w in enumerate(vocabulary())}
  tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
  tok.pre_tokenizer = _pre_tokenizer()
  tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
  tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
  return PreTrainedTokenizerFast(
      tokenizer_object=tok, unk_token=UNK, pad_token="<|endoftext|>", eos_token="<|im_end|>",
      additional_special_tokens=list(SPECIAL_TOKENS[1:]), model_max_length=32768, padding_side="right",
      clean_up_tokenization_spaces=False)


def feature_extractor(window_seconds: int):
  """128-mel Whisper front end with a `window_seconds` window (100 mel frames per second)."""
  from transformers import WhisperFeatureExtractor
  return WhisperFeatureExtractor(
      feature_size=128, sampling_rate=tasks.SAMPLING_RATE, hop_length=160, chunk_length=window_seconds,
      n_fft=400, padding_value=0.0, return_attention_mask=True)


def build_processor(window_seconds: int, tokenizer=None):
  """Qwen2AudioProcessor(feature extractor with a short window, word-level tokenizer, Instruct template)."""
  from transformers import Qwen2AudioProcessor
  tokenizer = build_tokenizer() if tokenizer is None else tokenizer
  return Qwen2AudioProcessor(feature_extractor=feature_extractor(window_seconds), tokenizer=tokenizer,
                             chat_template=CHAT_TEMPLATE)


def processor_files(processor, dst: str | Path) -> list[Path]:
  """Saves the processor into `dst` and returns the files written."""
  dst = Path(dst)
  processor.save_pretrained(str(dst))
  return sorted(p for p in dst.iterdir() if p.is_file())


def check(tokenizer, texts=None) -> None:
  """Raises if a corpus text tokenises to `<unk>` or a label is not a token sequence."""
  unk = tokenizer.convert_tokens_to_ids(UNK)
  for text in corpus() if texts is None else texts:
    if unk in tokenizer(text, add_special_tokens=False)["input_ids"]:
      raise ValueError(f"unknown word in {text!r}")
  for labels in tasks.LABELS.values():
    for y in labels:
      if not tokenizer(y, add_special_tokens=False)["input_ids"]:
        raise ValueError(f"label {y!r} has no tokens")


if __name__ == "__main__":
  import sys
  with tempfile.TemporaryDirectory() as d:
    proc = build_processor(2)
    print(len(proc.tokenizer), [p.name for p in processor_files(proc, sys.argv[1] if len(sys.argv) > 1 else d)])
