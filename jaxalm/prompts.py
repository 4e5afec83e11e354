"""Per-family prompt layout, split into a shared prefix (ending with the audio block) and a
per-branch suffix, so that branches of one item share the audio prefix's KV cache.

Every audio family puts the audio before the user text. The prefix is cut right after the
last audio token; the text, the end of the user turn and the assistant header form the
suffix. Callers tokenise prefix and suffix separately (`split_tokens` checks that their
concatenation equals the tokenisation of the whole prompt).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Layout:
  """A family's chat layout around one media block and one user text."""
  head: str            # before the media block
  media_open: str      # e.g. "Audio 1: <|audio_bos|>"
  media_token: str     # one placeholder per media embedding row
  media_close: str     # e.g. "<|audio_eos|>"
  user_text: str       # "{text}" with whatever separates it from the media block
  tail: str            # end of the user turn and the assistant header
  no_media_user_text: str = "{text}"

  def prefix(self, n_media_tokens: int | None) -> str:
    """Text up to and including the media block (the system/user header when no media)."""
    if n_media_tokens is None:
      return self.head
    return self.head + self.media_open + self.media_token * n_media_tokens + self.media_close

  def suffix(self, text: str, with_media: bool = True) -> str:
    """The branch-specific rest of the prompt after the prefix."""
    body = self.user_text if with_media else self.no_media_user_text
    return body.format(text=text) + self.tail

  def prompt(self, text: str, n_media_tokens: int | None) -> str:
    return self.prefix(n_media_tokens) + self.suffix(text, n_media_tokens is not None)


# The Qwen2-Audio-7B-Instruct chat template (as published on the hub).
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


_QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
_QWEN_TAIL = "<|im_end|>\n<|im_start|>assistant\n"

LAYOUTS = {
    "qwen2_audio": Layout(head=_QWEN_SYSTEM, media_open="Audio 1: <|audio_bos|>", media_token="<|AUDIO|>",
                          media_close="<|audio_eos|>", user_text="\n{text}", tail=_QWEN_TAIL),
    # Qwen3-VL's chat template adds no default system turn.
    "qwen3_vl": Layout(head="<|im_start|>user\n", media_open="<|vision_start|>", media_token="<|image_pad|>",
                       media_close="<|vision_end|>", user_text="{text}", tail=_QWEN_TAIL),
}


def layout(model_type: str) -> Layout:
  if model_type not in LAYOUTS:
    raise ValueError(f"no prompt layout for model_type {model_type!r}; known: {sorted(LAYOUTS)}")
  return LAYOUTS[model_type]


def split_tokens(tokenizer, prefix: str, suffix: str) -> tuple[list[int], list[int]]:
  """Token ids of prefix and suffix, checked to concatenate to the whole prompt's ids."""
  p = tokenizer(prefix, add_special_tokens=False)["input_ids"]
  s = tokenizer(suffix, add_special_tokens=False)["input_ids"]
  whole = tokenizer(prefix + suffix, add_special_tokens=False)["input_ids"]
  if p + s != whole:
    raise ValueError(f"prefix/suffix tokenisation does not concatenate to the whole prompt at the cut "
                     f"{prefix[-20:]!r} | {suffix[:20]!r}")
  return p, s
