"""The organism's procedural audio tasks: closed label sets and text evidence, deterministic from a seed.

The task generator of the shipped model organism (`jaxalm/assets/organism`, trained by
`experiments/organism/train.py`); `jaxalm demo` exports a held-out benchmark from it.

Four tasks, each a closed set of single-word labels:
  pitch   pure tone by register:           low (150-320 Hz), mid (550-1000 Hz), high (1800-3200 Hz)
  chirp   exponential sweep direction:     rising, falling, flat
  noise   noise colour (1/f^alpha):        white, pink, brown
  clicks  number of clicks in the clip:    one, two, three, four
Clips last 1.0-2.0 s at 16 kHz (float32). Item k of `generate(n, seed)` depends only on
(seed, k): task k % 4, label balanced round-robin within its task.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

SAMPLING_RATE = 16000
MIN_SECONDS, MAX_SECONDS = 1.0, 2.0

LABELS = {
    "pitch": ("low", "mid", "high"),
    "chirp": ("rising", "falling", "flat"),
    "noise": ("white", "pink", "brown"),
    "clicks": ("one", "two", "three", "four"),
}
TASKS = tuple(LABELS)

QUESTIONS = {
    "pitch": ("What is the pitch of the tone?", "How high is the tone in the recording?",
              "Which pitch range does the tone fall in?"),
    "chirp": ("How does the pitch of the sweep change?", "What is the direction of the pitch change?",
              "How does the pitch move over time?"),
    "noise": ("What colour is the noise?", "Which kind of noise is in the recording?",
              "What is the colour of this noise?"),
    "clicks": ("How many clicks are in the recording?", "How many clicks do you hear?",
               "Count the clicks in the recording."),
}

# Evidence naming a label; the same templates serve faithful and adversarial evidence.
EVIDENCE_TEMPLATES = (
    "The recording was labelled as {y}.",
    "A listener reported hearing {y}.",
    "The annotation for this clip says {y}.",
    "According to the metadata, the answer is {y}.",
    "The caption of this recording reads {y}.",
    "An expert rated the sound as {y}.",
    "The file name ends with {y}.",
    "Most people who heard it answered {y}.",
)
# Evidence unrelated to the question (names no label).
IRRELEVANT_TEMPLATES = (
    "The recording was made on a rainy afternoon.",
    "The clip was stored as a wav file.",
    "A listener used headphones for this recording.",
    "The file was uploaded last week.",
    "The annotation was written by a student.",
    "This clip is part of a larger collection.",
)
CONDITIONS = ("neutral", "faithful", "adversarial", "irrelevant")

JOINT_TEMPLATE = "Question: {q}\nText evidence: {text}\nCandidates: {c}\nAnswer with exactly one candidate."
SAME_AUDIO_TEMPLATE = "Question: {q}\nCandidates: {c}\nAnswer with exactly one candidate."


@dataclasses.dataclass(frozen=True, eq=False)
class Item:
  """One conflict item; `neutral` is None (no evidence line)."""
  id: str
  task: str
  waveform: np.ndarray  # [samples] float32, 16 kHz
  question: str
  candidates: tuple[str, ...]
  answer: str  # y_a, supported by the audio
  text_answer: str  # y_t != y_a, supported by the adversarial evidence
  faithful: str
  adversarial: str
  irrelevant: str
  neutral: None = None

  def evidence(self, condition: str) -> str | None:
    """The evidence text of a condition (None for neutral)."""
    if condition not in CONDITIONS:
      raise ValueError(f"unknown condition {condition!r}; known: {CONDITIONS}")
    return getattr(self, condition)

  def text(self, condition: str) -> str:
    """The user text of the [ARB] prompt under a condition."""
    return prompt_text(self.question, self.candidates, self.evidence(condition))


def prompt_text(question: str, candidates, evidence: str | None) -> str:
  """[ARB] joint template, or the same-audio template when `evidence` is None."""
  c = ", ".join(candidates)
  if evidence is None:
    return SAME_AUDIO_TEMPLATE.format(q=question, c=c)
  return JOINT_TEMPLATE.format(q=question, text=evidence, c=c)


# ----------------------------------------------------------------------------- audio


def _fade(x: np.ndarray, ms: float = 15.0) -> np.ndarray:
  n = min(int(SAMPLING_RATE * ms / 1000), len(x) // 2)
  ramp = np.sin(np.linspace(0, np.pi / 2, n)) ** 2
  x[:n] *= ramp
  x[len(x) - n:] *= ramp[::-1]
  return x


def _tone(rng, label, t):
  lo, hi = {"low": (150, 320), "mid": (550, 1000), "high": (1800, 3200)}[label]
  f = np.exp(rng.uniform(np.log(lo), np.log(hi)))
  return np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))


def _chirp(rng, label, t):
  d = t[-1] + 1 / SAMPLING_RATE
  f0 = np.exp(rng.uniform(np.log(250), np.log(1200)))
  ratio = rng.uniform(2.0, 3.5)
  if label == "flat":
    return np.sin(2 * np.pi * f0 * np.sqrt(ratio) * t + rng.uniform(0, 2 * np.pi))
  k = np.log(ratio) / d
  if label == "rising":
    phase = f0 * (np.exp(k * t) - 1) / k
  else:  # falling from f0 * ratio to f0
    phase = f0 * ratio * (1 - np.exp(-k * t)) / k
  return np.sin(2 * np.pi * phase + rng.uniform(0, 2 * np.pi))


def _noise(rng, label, t):
  alpha = {"white": 0.0, "pink": 1.0, "brown": 2.0}[label]
  n = len(t)
  spec = np.fft.rfft(rng.standard_normal(n))
  f = np.fft.rfftfreq(n, 1 / SAMPLING_RATE)
  scale = np.zeros_like(f)
  scale[1:] = np.maximum(f[1:], 20.0) ** (-alpha / 2)
  x = np.fft.irfft(spec * scale, n)
  return x / (np.max(np.abs(x)) + 1e-9)


def _clicks(rng, label, t):
  count = LABELS["clicks"].index(label) + 1
  n, d = len(t), len(t) / SAMPLING_RATE
  gap = 0.15
  # Onsets in [0.1, d - 0.1] at least `gap` apart: sorted uniforms shifted by cumulative gaps.
  span = d - 0.2 - gap * (count - 1)
  onsets = 0.1 + np.sort(rng.uniform(0, span, count)) + gap * np.arange(count)
  x = np.zeros(n)
  length = int(0.025 * SAMPLING_RATE)
  env = np.exp(-np.arange(length) / (0.005 * SAMPLING_RATE))
  f = rng.uniform(1500, 3500)
  for o in onsets:
    i = int(o * SAMPLING_RATE)
    burst = env * (0.5 * rng.standard_normal(length) + np.sin(2 * np.pi * f * np.arange(length) / SAMPLING_RATE))
    x[i:i + length] += burst * rng.uniform(0.7, 1.0)
  return x / (np.max(np.abs(x)) + 1e-9)


_SYNTH = {"pitch": _tone, "chirp": _chirp, "noise": _noise, "clicks": _clicks}


def synthesize(rng: np.random.Generator, task: str, label: str) -> np.ndarray:
  """A float32 16 kHz clip of `task` with label `label` (random duration, level, background)."""
  seconds = rng.uniform(MIN_SECONDS, MAX_SECONDS)
  t = np.arange(int(round(seconds * SAMPLING_RATE))) / SAMPLING_RATE
  x = _SYNTH[task](rng, label, t)
  if task != "clicks":
    x = _fade(x)
  x = x * rng.uniform(0.1, 0.6) + rng.uniform(0.0005, 0.003) * rng.standard_normal(len(t))
  return x.astype(np.float32)


# ----------------------------------------------------------------------------- items


def make_item(seed: int, k: int, tasks=TASKS) -> Item:
  """Item k of the benchmark with this seed (independent of every other item)."""
  task = tasks[k % len(tasks)]
  labels = LABELS[task]
  answer = labels[(k // len(tasks)) % len(labels)]
  rng = np.random.default_rng([seed, k])
  text_answer = rng.choice([y for y in labels if y != answer])
  waveform = synthesize(rng, task, answer)
  q = QUESTIONS[task][rng.integers(len(QUESTIONS[task]))]
  faithful = EVIDENCE_TEMPLATES[rng.integers(len(EVIDENCE_TEMPLATES))].format(y=answer)
  adversarial = EVIDENCE_TEMPLATES[rng.integers(len(EVIDENCE_TEMPLATES))].format(y=text_answer)
  irrelevant = IRRELEVANT_TEMPLATES[rng.integers(len(IRRELEVANT_TEMPLATES))]
  return Item(id=f"{task}-s{seed}-{k:05d}", task=task, waveform=waveform, question=q, candidates=labels,
              answer=answer, text_answer=str(text_answer), faithful=faithful, adversarial=adversarial,
              irrelevant=irrelevant)


def generate(n: int, seed: int, tasks=TASKS) -> list[Item]:
  """n items, tasks round-robin, labels balanced within each task."""
  return [make_item(seed, k, tuple(tasks)) for k in range(n)]


# ----------------------------------------------------------------------------- export


BENCHMARK = "jaxalm-organism"


def export(items, dst: str | Path, *, split: str | None = "test", name: str = "organism") -> Path:
  """Writes an MCR-Bench-style `{dst}/{name}_{split}.jsonl` and `{dst}/audio/{id}.wav`.

  Fields: id, audio (path relative to dst), question, candidates, answer, faithful,
  adversarial, irrelevant, text_answer, task, split, benchmark; the "mcr" layout of
  `jaxalm.data.readers` (`read_mcr(path)`) reads it. With `split=None` the rows have no
  split field and the file is `{dst}/{name}.jsonl`.
  """
  import soundfile as sf

  dst = Path(dst)
  (dst / "audio").mkdir(parents=True, exist_ok=True)
  path = dst / (f"{name}.jsonl" if split is None else f"{name}_{split}.jsonl")
  with open(path, "w") as f:
    for it in items:
      rel = f"audio/{it.id}.wav"
      sf.write(dst / rel, it.waveform, SAMPLING_RATE, subtype="FLOAT")
      row = {"id": it.id, "audio": rel, "question": it.question, "candidates": list(it.candidates),
             "answer": it.answer, "faithful": it.faithful, "adversarial": it.adversarial,
             "irrelevant": it.irrelevant, "text_answer": it.text_answer, "task": it.task, "split": split,
             "benchmark": BENCHMARK}
      if split is None:
        del row["split"]
      f.write(json.dumps(row) + "\n")
  return path


def main(argv=None) -> None:
  import argparse
  p = argparse.ArgumentParser(description="Export a generated organism benchmark (JSONL + wav).")
  p.add_argument("--out", required=True)
  p.add_argument("--n", type=int, default=400)
  p.add_argument("--seed", type=int, default=2026)
  p.add_argument("--split", default="test", help='split field of every row ("" for none)')
  a = p.parse_args(argv)
  print(export(generate(a.n, a.seed), a.out, split=a.split or None))


if __name__ == "__main__":
  main()
