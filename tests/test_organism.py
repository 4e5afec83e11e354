"""The arbitration model organism: tasks, tokenizer, training recipe, shipped checkpoint."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxalm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/ is not installed
from experiments.organism import common, tasks  # noqa: E402
from experiments.organism import tokenizer as tok_lib  # noqa: E402
from jaxalm import prompts  # noqa: E402

ORGANISM = Path(jaxalm.__file__).parent / "assets" / "organism"
HELD_OUT_SEED = 2026  # training used seed 0, its own evaluation seed 1


@pytest.fixture(scope="module")
def tokenizer():
  return tok_lib.build_tokenizer()


@pytest.fixture(scope="module")
def organism():
  assert (ORGANISM / "jaxalm.json").is_file(), (
      f"the shipped organism is missing from {ORGANISM} (python -m experiments.organism.train --out {ORGANISM})")
  return jaxalm.load(ORGANISM)


def test_tasks_deterministic_and_balanced():
  a, b = tasks.generate(24, seed=3), tasks.generate(24, seed=3)
  for x, y in zip(a, b):
    assert x.id == y.id and np.array_equal(x.waveform, y.waveform)
    assert [x.text(c) for c in tasks.CONDITIONS] == [y.text(c) for c in tasks.CONDITIONS]
  assert not np.array_equal(a[0].waveform, tasks.generate(1, seed=4)[0].waveform)
  assert tasks.make_item(3, 17).adversarial == a[17].adversarial

  items = tasks.generate(240, seed=5)
  counts = collections.Counter((it.task, it.answer) for it in items)
  for task, labels in tasks.LABELS.items():
    n = [counts[task, y] for y in labels]
    assert max(n) - min(n) <= 1, (task, n)
  for it in items:
    assert it.waveform.dtype == np.float32 and 1.0 <= len(it.waveform) / tasks.SAMPLING_RATE <= 2.0
    assert it.answer in it.candidates and it.text_answer in it.candidates and it.answer != it.text_answer
    assert it.answer in it.faithful.split(" ")[-1] and it.text_answer in it.adversarial.split(" ")[-1]
    assert not set(it.irrelevant.rstrip(".").split()) & set(it.candidates)
    assert "Text evidence" not in it.text("neutral")


def test_export(tmp_path):
  import json

  import soundfile as sf

  items = tasks.generate(4, seed=9)
  path = tasks.export(items, tmp_path, split="dev")
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  assert set(rows[0]) == {"id", "audio", "question", "candidates", "answer", "faithful", "adversarial",
                          "irrelevant", "text_answer", "task", "split", "benchmark"}
  wav, sr = sf.read(tmp_path / rows[1]["audio"], dtype="float32")
  assert sr == tasks.SAMPLING_RATE and np.array_equal(wav, items[1].waveform)

  # The library's MCR-Bench reader and [ARB] templates see the same items and prompts.
  from jaxalm.data.readers import read_mcr
  from jaxalm.data.templates import branch_text

  read = read_mcr(path).items
  for it, r in zip(items, read):
    assert (r.id, r.answer, r.text_answer, r.candidates, r.task, r.split) == (
        it.id, it.answer, it.text_answer, it.candidates, it.task, "dev")
    for branch, cond in (("joint", "adversarial"), ("faithful", "faithful"), ("irrelevant", "irrelevant"),
                         ("same_audio", "neutral")):
      assert branch_text(r, branch) == it.text(cond)


def test_tokenizer_prefix_suffix(tokenizer):
  tok_lib.check(tokenizer)
  lay = prompts.layout("qwen2_audio")
  unk = tokenizer.convert_tokens_to_ids(tok_lib.UNK)
  for it in tasks.generate(8, seed=1):
    for c in tasks.CONDITIONS:
      p, s = prompts.split_tokens(tokenizer, lay.prefix(50), lay.suffix(it.text(c)))
      assert unk not in p + s
    for y in it.candidates:
      ids = tokenizer(y, add_special_tokens=False)["input_ids"]
      assert len(ids) >= 1 and unk not in ids


def test_training_recipe_alive():
  from experiments.organism import train

  tc = train.TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=5, n_train_items=64)
  _, _, _, _, history = train.train(tc, train.TINY_MODEL, log=lambda *_: None)
  loss = history["loss"]
  assert np.isfinite(loss).all()
  assert np.mean(loss[-5:]) < np.mean(loss[:5]) - 0.5, loss


def test_shipped_organism(organism):
  model = organism
  proc = model.processor
  assert model.config.audio.max_source_positions == 100
  assert model.config.audio_token_id == proc.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
  enc = common.Encoder(proc.tokenizer, proc.feature_extractor)
  items = tasks.generate(120, seed=HELD_OUT_SEED)

  # The encoder reproduces the processor's own expansion of the chat template.
  it = items[0]
  msgs = [{"role": "user", "content": [{"type": "audio", "audio_url": "x.wav"},
                                       {"type": "text", "text": it.text("adversarial")}]}]
  text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
  ref = proc(text=[text], audio=[it.waveform], sampling_rate=tasks.SAMPLING_RATE, return_tensors="np")
  audio = enc.audio(items)
  assert list(enc.prompt(audio["n_audio"][0], it.text("adversarial"))) == ref["input_ids"][0].tolist()
  np.testing.assert_array_equal(audio["input_features"][0], ref["input_features"][0])

  z = common.candidate_scores(model.forward, model.params, enc, items, audio=audio)
  # One row per candidate (any label length) gives the same scores as the shared-row path.
  few = items[:8]
  z_rows = common.candidate_scores(model.forward, model.params, enc, few, per_candidate=True, batch_size=32)
  finite = np.isfinite(z[:8])
  np.testing.assert_allclose(z_rows[finite], z[:8][finite], atol=1e-5)
  assert np.array_equal(finite, np.isfinite(z_rows))
  d = common.diagnostics(z, items)
  assert d["same_audio_acc"] >= 0.8, d
  assert d["repairable_rate"] >= 0.3, d


def test_organism_through_library_pipeline(organism, tmp_path):
  """Exported items read by `jaxalm.data`, scored by `jaxalm.branches.Scorer` (shared
  prefixes, `jaxalm.audio` features) agree with the local scoring helper."""
  from jaxalm.branches import Scorer
  from jaxalm.data.readers import read_mcr

  model = organism
  items = tasks.generate(8, seed=HELD_OUT_SEED + 1)
  read = read_mcr(tasks.export(items, tmp_path)).items
  scorer = Scorer(model, branches=("same_audio", "faithful", "joint"), batch_size=8)
  got = np.stack([np.stack([np.pad(s[b], (0, 4 - len(s[b])), constant_values=-np.inf)
                            for b in ("same_audio", "faithful", "joint")]) for _, s in scorer.score(read)])
  got = np.asarray(jax.nn.log_softmax(got, axis=-1))
  proc = model.processor
  z = common.candidate_scores(model.forward, model.params, common.Encoder(proc.tokenizer, proc.feature_extractor),
                              items)
  finite = np.isfinite(z)
  assert np.array_equal(finite, np.isfinite(got))
  np.testing.assert_allclose(got[finite], z[finite], atol=1e-3)
