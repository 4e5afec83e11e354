"""Prompt TEXT of each branch of an item (the user text only; chat layout is `prompts.py`).

Styles:

- "arb": the [ARB] MCR-Bench templates (science.md section 1), `{c}` = candidates joined
  by ", ":
    evidence branches: "Question: {q}\\nText evidence: {text}\\nCandidates: {c}\\n"
                       "Answer with exactly one candidate."
    same_audio / no_audio: the same without the "Text evidence:" line.
- "alme": the [ARB] ALME template (its configs/prompts/alme.yaml); candidates are the
  option letters and the answer is a letter:
    "Question: {q}\\nContext: {text}\\nOptions: A. {opt_a}, B. {opt_b}\\n"
    "Answer with only the option letter."  (same_audio / no_audio drop the Context line;
  rendering the options as "A. x, B. y" is our choice).
- "mcq": the [TP] MMAU multiple-choice prompt, no evidence (text-prior study):
    "{q}\\n\\nOptions:\\nA: {c0}\\nB: {c1}...\\n\\n"
    "Answer with the full option text (you may include the letter)."

Branches: "joint" (adversarial text), "faithful", "irrelevant", "same_audio" and
"no_audio" (no evidence; same text, they differ in the audio, handled elsewhere).
For image items "same_image" / "no_image" are accepted as aliases.
"""

from __future__ import annotations

from jaxalm.data.schema import Item

BRANCHES = ("joint", "faithful", "irrelevant", "same_audio", "no_audio")
STYLES = ("arb", "alme", "mcq")

# branch -> evidence kind it shows (None: no evidence)
BRANCH_EVIDENCE = {"joint": "adversarial", "faithful": "faithful", "irrelevant": "irrelevant",
                   "same_audio": None, "no_audio": None}
_ALIASES = {"same_image": "same_audio", "no_image": "no_audio"}

ARB_EVIDENCE = "Question: {q}\nText evidence: {text}\nCandidates: {c}\nAnswer with exactly one candidate."
ARB_NO_EVIDENCE = "Question: {q}\nCandidates: {c}\nAnswer with exactly one candidate."
ALME_EVIDENCE = "Question: {q}\nContext: {text}\nOptions: {o}\nAnswer with only the option letter."
ALME_NO_EVIDENCE = "Question: {q}\nOptions: {o}\nAnswer with only the option letter."
MCQ = "{q}\n\nOptions:\n{o}\n\nAnswer with the full option text (you may include the letter)."

_STYLE_BY_BENCHMARK = {"alme": "alme", "mmau": "mcq", "mmar": "mcq", "mmau-pro": "mcq"}


def default_style(item: Item) -> str:
  """"alme" for ALME items, "mcq" for MMAU-style items, else "arb"."""
  return _STYLE_BY_BENCHMARK.get(item.benchmark.lower(), "arb")


def branch_text(item: Item, branch: str, *, style: str | None = None) -> str:
  """The user text of `branch` for `item`.

  Args:
    item: the item.
    branch: one of `BRANCHES`.
    style: one of `STYLES`; default `default_style(item)`.

  Returns:
    The prompt text. Raises ValueError (naming the item) if the branch needs evidence
    the item does not have, or the style does not fit the item.
  """
  branch = _ALIASES.get(branch, branch)
  if branch not in BRANCH_EVIDENCE:
    raise ValueError(f"unknown branch {branch!r}; expected one of {BRANCHES}")
  style = style or default_style(item)
  if style not in STYLES:
    raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
  kind = BRANCH_EVIDENCE[branch]
  text = None
  if kind is not None:
    if style == "mcq":
      raise ValueError(f"item {item.id!r}: the 'mcq' style has no evidence branches (asked for {branch!r})")
    if kind not in item.evidence:
      raise ValueError(f"item {item.id!r}: branch {branch!r} needs {kind!r} evidence; "
                       f"the item has {sorted(item.evidence) or 'none'}")
    text = item.evidence[kind]
  q = item.question
  if style == "arb":
    c = ", ".join(item.candidates)
    return ARB_NO_EVIDENCE.format(q=q, c=c) if text is None else ARB_EVIDENCE.format(q=q, text=text, c=c)
  if style == "alme":
    if not item.options:
      raise ValueError(f"item {item.id!r}: the 'alme' style needs option texts (item.options)")
    o = ", ".join(f"{letter}. {opt}" for letter, opt in zip(item.candidates, item.options))
    return ALME_NO_EVIDENCE.format(q=q, o=o) if text is None else ALME_EVIDENCE.format(q=q, text=text, o=o)
  o = "\n".join(f"{chr(65 + i)}: {c}" for i, c in enumerate(item.candidates))
  return MCQ.format(q=q, o=o)
