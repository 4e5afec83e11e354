"""Shared-prefix candidate scoring: equal to full forwards, to per-branch calls, to per-item calls."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import tiny_hf
from jaxalm.branches import BranchError, Scorer, branch_media, fragment_branches
from jaxalm.data.schema import Item
from jaxalm.scoring import score_full

BRANCHES = ("joint", "faithful", "same_audio", "no_audio", "perturbed")


def make_items(n=3):
  items, waves = [], {}
  for i in range(n):
    path = f"mem://clip{i}"
    waves[path] = tiny_hf.make_audio((0.7, 1.9, 3.1)[i % 3], seed=10 + i)
    items.append(Item(
        id=f"item{i}", modality="audio", media=path, question="What is the sound in the audio?",
        candidates=("dog", "rain", "the bell")[: 2 + i % 2], answer="dog", text_answer="rain",
        evidence={"adversarial": "The recording was labelled as rain.", "faithful": "A listener heard a dog."},
        benchmark="mcr-bench"))
  return items, waves


@pytest.fixture(scope="module")
def setup(tiny):
  model = tiny.model()
  items, waves = make_items()
  return model, items, waves


def _scorer(model, waves, branches, **kw):
  return Scorer(model, branches, load_media=waves.__getitem__, **kw)


def test_shared_prefix_scores_equal_full_forwards(setup):
  model, items, waves = setup
  scorer = _scorer(model, waves, BRANCHES)
  plans = [scorer.plan(it) for it in items]
  got = scorer.score_plans(plans)
  full = jax.jit(score_full, static_argnames=("forward", "max_label_len"))
  length = max(len(p.prefix_ids[slot]) + len(ids) for p in plans for slot, ids, _, _ in p.rows)
  for plan, per in zip(plans, got):
    r = 0
    for branch in BRANCHES:
      for c in range(len(plan.item.candidates)):
        slot, ids, start, n = plan.rows[r]
        whole = plan.prefix_ids[slot] + ids
        inputs = {"input_ids": np.zeros((1, length), np.int32), "attention_mask": np.zeros((1, length), np.int32)}
        inputs["input_ids"][0, :len(whole)] = whole
        inputs["attention_mask"][0, :len(whole)] = 1
        if plan.media[slot] is not None:
          inputs.update(model.family.collate_media([plan.media[slot]]))
        want = full(model.params, inputs, np.array([len(plan.prefix_ids[slot]) + start]), np.array([n]),
                    forward=model.forward, max_label_len=8)
        assert abs(per[branch][c] - float(want[0])) <= 1e-4, (plan.item.id, branch, c)
        r += 1


def test_branches_in_one_call_equal_a_loop_over_branches(setup):
  model, items, waves = setup
  together = list(_scorer(model, waves, BRANCHES).score(items))
  for branch in ("joint", "no_audio", "perturbed"):
    alone = list(_scorer(model, waves, (branch,)).score(items))
    for (_, a), (_, b) in zip(together, alone):
      np.testing.assert_allclose(a[branch], b[branch], atol=1e-4, rtol=0)


def test_batched_items_equal_items_alone(setup):
  model, items, waves = setup
  batched = list(_scorer(model, waves, ("joint", "same_audio"), batch_size=3).score(items))
  single = list(_scorer(model, waves, ("joint", "same_audio"), batch_size=1).score(items))
  for (ia, a), (ib, b) in zip(batched, single):
    assert ia.id == ib.id
    for k in a:
      np.testing.assert_allclose(a[k], b[k], atol=1e-4, rtol=0)


def test_branches_really_differ(setup):
  model, items, waves = setup
  (_, per), = list(_scorer(model, waves, BRANCHES).score(items[:1]))
  assert not np.allclose(per["joint"], per["same_audio"], atol=1e-3)
  assert not np.allclose(per["same_audio"], per["no_audio"], atol=1e-3)
  assert not np.allclose(per["joint"], per["perturbed"], atol=1e-3)
  assert all(np.all(v < 0) for v in per.values())


def test_fragments_and_bad_items(setup):
  model, items, waves = setup
  assert len(fragment_branches()) == 14
  assert branch_media("frag3_2") == ("frag3_2", "same_audio")
  with pytest.raises(ValueError):
    branch_media("frag2_3")
  scorer = _scorer(model, waves, ("same_audio",) + fragment_branches((2, 3)))
  (_, per), = list(scorer.score(items[:1]))
  assert set(per) == {"same_audio", "frag2_1", "frag2_2", "frag3_1", "frag3_2", "frag3_3"}
  no_evidence = Item(id="bare", modality="audio", media="mem://clip0", question="q?", candidates=("a", "b"),
                     answer="a", benchmark="mcr-bench")
  skipped = []
  out = list(_scorer(model, waves, ("joint", "same_audio")).score([no_evidence, items[0]], on_error="skip",
                                                                  skipped=skipped))
  assert [it.id for it, _ in out] == ["item0"]
  assert skipped[0][0] == "bare" and "adversarial" in skipped[0][1]
  with pytest.raises(BranchError, match="bare"):
    list(_scorer(model, waves, ("joint",)).score([no_evidence]))
