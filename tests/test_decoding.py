"""Generation-time GACL: trie decoding agrees with candidate scoring, lam=0 reduces to joint
decoding, cached per-step logits equal full forwards, and the organism's conflict accuracy rises."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxalm
import tiny_hf
from jaxalm import correction, decoding, generation
from jaxalm.branches import Scorer
from jaxalm.data.schema import Item
from jaxalm.models.output import Output

# (candidates, audio clip); the tiny random model's J and A disagree on clips 0 and 6.
SINGLE = ((("no", "D"), 0), (("D", "no", "C"), 1), (("no", "D", "A", "B"), 6), (("rain", "C", "no"), 3))
MULTI = ((("dog", "dog house", "the bell"), 0), (("rain", "the bell", "piano"), 1),
         (("dog house", "dog", "A"), 2), (("the bell", "rain"), 3))
BRANCHES = ("joint", "same_audio")


def make_items(spec, seed=0):
  items, waves = [], {}
  for i, (cands, clip) in enumerate(spec):
    path = f"mem://dec{seed}_{clip}"
    waves[path] = tiny_hf.make_audio((0.7, 1.6, 2.4)[clip % 3], seed=seed * 100 + clip)
    items.append(Item(
        id=f"dec{seed}_{i}", modality="audio", media=path, question="What is the sound in the audio?",
        candidates=cands, answer=cands[0], text_answer=cands[1],
        evidence={"adversarial": f"The recording was labelled as {cands[1]}.", "faithful": "A dog barked."},
        benchmark="mcr-bench"))
  return items, waves


@pytest.fixture(scope="module")
def multi(tiny):
  model = tiny.model()
  items, waves = make_items(MULTI, seed=1)
  scorer = Scorer(model, BRANCHES, batch_size=len(items), load_media=waves.__getitem__)
  end = decoding.default_end_token(scorer.tokenizer)
  return model, scorer, [decoding._item_plan(scorer, it, BRANCHES, end) for it in items]


_forward_ref = jax.jit(lambda params, inputs, forward: forward(params, **inputs).logits, static_argnums=2)


def check_step_logits(model, seqs, media, logits, n_steps):
  """The loop's step-t logits of row r = a full forward's logits at the last token of
  seqs[r][:len(prompt) + t] (seqs[r] = prompt + all generated tokens)."""
  rows, steps = len(seqs), logits.shape[2]
  length = -(-max(len(s) for s in seqs) // 256) * 256  # one compiled shape for every caller
  inputs = {"input_ids": np.zeros((rows, length), np.int32), "attention_mask": np.zeros((rows, length), np.int32),
            **model.family.collate_media(media)}
  for r, s in enumerate(seqs):
    inputs["input_ids"][r, :len(s)], inputs["attention_mask"][r, :len(s)] = s, 1
  full = np.asarray(_forward_ref(model.params, inputs, model.forward))
  b = rows // logits.shape[0]
  checked = 0
  for r, s in enumerate(seqs):
    start = len(s) - steps
    for t in range(n_steps[r % b]):
      np.testing.assert_allclose(logits[r // b, r % b, t], full[r, start + t - 1], atol=1e-4, rtol=0)
      checked += 1
  assert checked >= rows


# --------------------------------------------------------------------- host + fake model

def _fake_forward(params, input_ids, attention_mask=None, cache=None, **_):
  """Logits of row r = params[r, last token]: a scripted model for the loop's logic."""
  logits = params[jnp.arange(input_ids.shape[0])[:, None], input_ids]
  return Output(logits=logits, captures={}, cache=cache)


def _fake_model(table):
  return types.SimpleNamespace(forward=_fake_forward, params=table, config=types.SimpleNamespace(
      text=types.SimpleNamespace(num_layers=1, num_kv_heads=1, head_dim=1, vocab_size=table.shape[-1])))


def _script(rows: list[dict[int, dict[int, float]]], vocab=8):
  """[rows, vocab, vocab] logits: rows[r][last token][next token] = logit, else -10."""
  table = np.full((len(rows), vocab, vocab), -10.0, np.float32)
  for r, per in enumerate(rows):
    for last, nxt in per.items():
      for t, v in nxt.items():
        table[r, last, t] = v
  return table


def test_trie_and_scripted_loop():
  tok = tiny_hf.make_tokenizer()
  end = decoding.default_end_token(tok)
  trie = decoding.build_trie(tok, ("dog", "dog house", "the bell", "rain"))
  ids = [tok("\n" + c, add_special_tokens=False)["input_ids"][1:] for c in trie.labels]
  assert trie.label_ids[0] == tuple(ids[0]) + (end,)  # "dog" is a prefix of "dog house"
  assert trie.label_ids[1:] == tuple(tuple(x) for x in ids[1:]) and trie.end_token_id == end
  assert decoding.build_trie(tok, ("rain", "no")).end_token_id is None
  for i, x in enumerate(trie.label_ids):
    assert decoding.label_index(trie, list(x) + [0, 0]) == i and decoding.label_index(trie, x[:-1]) == -1
  assert set(trie.tokens[0][trie.tokens[0] >= 0]) == {x[0] for x in trie.label_ids}
  with pytest.raises(ValueError, match="prefix"):
    decoding.trie_from_ids([[1, 2], [1]])

  # Scripted model, tokens 0..7: labels dog = [1] (+ end 7), dog house = [1, 2, 3], bell = [4, 5].
  small = decoding.trie_from_ids([[1], [1, 2, 3], [4, 5]], ("dog", "dog house", "bell"), end_token_id=7)
  assert small.label_ids == ((1, 7), (1, 2, 3), (4, 5)) and small.depth == 3
  j0 = {0: {4: 3.0, 1: 0.0, 6: 9.0}, 1: {7: 2.0, 2: 0.0}, 2: {3: 0.0}, 4: {5: 0.0}}  # J: bell
  a0 = {0: {1: 5.0, 4: 0.0, 6: 9.0}, 1: {2: 4.0, 7: 0.0}, 2: {3: 0.0}, 4: {5: 0.0}}  # A: dog house
  j1 = a1 = {0: {1: 2.0, 4: 0.0}, 1: {7: 1.0, 2: 0.0}}  # both: dog, then the terminator
  table = _script([j0, j1, a0, a1])
  fake = _fake_model(table)  # rows: J0, J1, A0, A1
  prompt = {"input_ids": np.zeros((2, 1), np.int32)}
  pad = 6
  joint, alphas = decoding.constrained_generate(_fake_model(table[:2]), prompt, trie=small, pad_token_id=pad)
  np.testing.assert_array_equal(joint, [[4, 5, pad], [1, 7, pad]])  # 6 outside the trie never wins
  assert not np.any(alphas)
  for lam, want, alpha0 in ((0.0, [4, 5, pad], 0.0), (1.0, [1, 2, 3], 1.0), (0.5, [1, 2, 3], 0.5)):
    toks, al = decoding.gacl_generate(fake, prompt, prompt, trie=small, lam=lam, tau=0.5, pad_token_id=pad)
    np.testing.assert_array_equal(toks, [want, [1, 7, pad]])
    # Gate: step 0 disagrees with R_A = 1; step 1 (lam > 0: node "1") disagrees again; then one token allowed.
    np.testing.assert_allclose(al, [[alpha0, alpha0, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)
    assert [decoding.label_of(small, t) for t in np.asarray(toks)] == [
        ("bell" if lam == 0 else "dog house"), "dog"]
  # R_A = margin / tau (tau = 10: 0.5 at step 0), per-row tries, free-form stop at eos.
  _, al = decoding.gacl_generate(fake, prompt, prompt, trie=[small, small], lam=1.0, tau=10.0)
  assert abs(float(al[0, 0]) - 0.5) < 1e-5
  free, _ = decoding.gacl_generate(fake, prompt, prompt, max_new_tokens=4, lam=0.0, eos_token_id=7, pad_token_id=pad)
  with pytest.raises(ValueError, match="vocabulary"):
    decoding.gacl_generate(fake, prompt, prompt, trie=decoding.trie_from_ids([[1], [9]]))
  np.testing.assert_array_equal(free[1], [1, 7, pad, pad])  # row 1 stops at eos
  assert int(free[0, 0]) == 6  # free-form: the unconstrained argmax


# --------------------------------------------------------------------------- tiny model

def test_single_token_labels_match_candidate_scoring(tiny):
  """(a) joint trie decoding = argmax of joint candidate scores; GACL trie decoding =
  `correction.gacl` on candidate log-softmax scores (decision and alpha); (c) lam=0 GACL
  decoding = plain constrained joint decoding."""
  model = tiny.model()
  items, waves = make_items(SINGLE)
  scorer = Scorer(model, BRANCHES, batch_size=len(items), load_media=waves.__getitem__)
  scores = [s for _, s in scorer.score(items)]
  assert all(t == 1 for it in items for t in map(len, decoding.build_trie(scorer.tokenizer, it.candidates).label_ids))
  joint = decoding.decode_items(scorer, items, mode="joint")
  assert [d.index for d in joint] == [int(np.argmax(s["joint"])) for s in scores]
  assert [d.label for d in joint] == [it.candidates[d.index] for it, d in zip(items, joint)]
  assert not any(d.fired for d in joint)
  fired = 0
  for lam, tau in ((0.5, 0.0), (1.0, 1e-3)):
    got = decoding.decode_items(scorer, items, mode="gacl", lam=lam, tau=tau)
    for d, s in zip(got, scores):
      zj, za = (np.asarray(correction.candidate_log_softmax(s[b])) for b in BRANCHES)
      z, alpha = correction.gacl(zj, za, lam, tau)
      assert d.index == int(np.argmax(z))
      np.testing.assert_allclose(d.alphas[0], float(alpha), atol=1e-4)
      fired += d.fired
  assert fired >= 2  # the gate really moved some decisions' scores
  lam0 = decoding.decode_items(scorer, items, mode="gacl", lam=0.0)
  assert all(np.array_equal(a.tokens, b.tokens) and not a.fired for a, b in zip(lam0, joint))


def test_multi_token_labels_complete_and_cache_exact(multi):
  """(b) every generated sequence is a whole valid label; (e) the loop's per-step J and A
  logits equal a full forward over prompt + generated tokens (shared audio prefix, gathered
  caches)."""
  model, scorer, plans = multi
  pad = scorer.tokenizer.pad_token_id
  for p, _, trie in plans:
    assert trie.label_ids == decoding.build_trie(scorer.tokenizer, p.item.candidates).label_ids
  steps = max(t.depth for _, _, t in plans)
  for lam in (0.0, 1.0):
    hp = decoding._hp(lam, 0.0, 1.0, None, pad)
    tokens, alphas, logits, prefix, rows = decoding._run_plans(scorer, plans, hp, steps, 2, True, return_logits=True)
    n_steps = []
    for (p, _, trie), t in zip(plans, tokens):
      idx = decoding.label_index(trie, t)
      n = len(trie.label_ids[max(idx, 0)])
      assert idx >= 0 and tuple(t[:n]) == trie.label_ids[idx] and np.all(t[n:] == pad)
      n_steps.append(n)
    assert np.all(alphas[tokens == pad] == 0)
    seqs, media = [], []
    for r in range(len(rows["input_ids"])):
      pre = int(rows["prefix_index"][r])
      seqs.append([*prefix["input_ids"][pre][prefix["attention_mask"][pre] > 0],
                   *rows["input_ids"][r][rows["attention_mask"][r] > 0], *tokens[r % len(plans)]])
      media.append(plans[pre][0].media[0])
    check_step_logits(model, seqs, media, logits, n_steps)


def test_free_form(multi):
  """(d) free-form GACL with lam=0 = `generation.generate` on the joint prompt (and on the
  same-audio prompt with the branches swapped); (e) per-step logits of the full-prompt path."""
  model, scorer, plans = multi
  eos = scorer.tokenizer.eos_token_id
  prompts = []
  branch_seqs = [[p.prefix_ids[s[b][0]] + s[b][1] for p, s, _ in plans] for b in range(2)]
  length = max(len(s) for seqs in branch_seqs for s in seqs)  # one shape: generate compiles once
  for seqs in branch_seqs:
    x = {"input_ids": np.zeros((len(seqs), length), np.int32),
         "attention_mask": np.zeros((len(seqs), length), np.int32),
         **model.family.collate_media([p.media[0] for p, _, _ in plans])}
    for i, s in enumerate(seqs):
      x["input_ids"][i, :len(s)], x["attention_mask"][i, :len(s)] = s, 1
    prompts.append(x)
  steps = 5
  for j, a in ((0, 1), (1, 0)):
    toks, alphas, _ = decoding.gacl_generate(model, prompts[j], prompts[a], max_new_tokens=steps, lam=0.0,
                                             eos_token_id=eos, return_logits=True)
    want = generation.generate(model, prompts[j], max_new_tokens=steps, eos_token_id=eos)
    np.testing.assert_array_equal(np.asarray(toks), np.asarray(want))
    assert not np.any(np.asarray(alphas))
  toks, alphas, logits = decoding.gacl_generate(model, prompts[0], prompts[1], max_new_tokens=steps, lam=1.0, tau=0.0,
                                                eos_token_id=eos, return_logits=True)
  toks = np.asarray(toks)
  n_steps = [next((k + 1 for k, t in enumerate(row) if t == eos), steps) for row in toks]
  seqs = [[*x["input_ids"][i][x["attention_mask"][i] > 0], *toks[i]] for x in prompts for i in range(len(plans))]
  logits = np.asarray(logits)
  check_step_logits(model, seqs, [p.media[0] for p, _, _ in plans] * 2, logits, n_steps)
  for i, n in enumerate(n_steps):  # each step's token is the GACL argmax of that step's J and A logits
    for t in range(n):
      z, alpha = correction.gacl_step(logits[0, i, t], logits[1, i, t], None, 1.0, 0.0, return_alpha=True)
      assert toks[i, t] == int(np.argmax(z)) and abs(float(alpha) - float(alphas[i, t])) < 1e-6
  assert np.any(np.asarray(alphas) > 0)


# ----------------------------------------------------------------------------- organism

def test_organism_gacl_raises_conflict_accuracy(tmp_path):
  """(f) the shipped organism follows the text under conflict; GACL trie decoding recovers
  the audio answer on most conflict items, without breaking faithful items much."""
  from jaxalm import organism_tasks as tasks

  model = jaxalm.load(jaxalm.__file__.replace("__init__.py", "assets/organism"))
  raw = tasks.generate(24, seed=2027)  # held out: training used seeds 0 and 1
  waves = {f"mem://{it.id}": it.waveform for it in raw}
  items = [Item(id=it.id, modality="audio", media=f"mem://{it.id}", question=it.question, candidates=it.candidates,
                answer=it.answer, text_answer=it.text_answer, task=it.task, benchmark=tasks.BENCHMARK,
                evidence={"adversarial": it.adversarial, "faithful": it.faithful}) for it in raw]
  scorer = Scorer(model, BRANCHES, batch_size=len(items), load_media=waves.__getitem__)

  def accuracy(mode, **kw):
    out = decoding.decode_items(scorer, items, mode=mode, **kw)
    assert all(d.label is not None for d in out)
    return np.mean([d.label == it.answer for d, it in zip(out, items)]), np.mean([d.fired for d in out])

  joint, _ = accuracy("joint")
  gacl_default, _ = accuracy("gacl")
  gacl, fired = accuracy("gacl", lam=1.0)
  faithful_gacl, _ = accuracy("gacl", lam=1.0, joint_branch="faithful")
  print(f"organism conflict accuracy: joint {joint:.3f}, GACL lam=0.5 {gacl_default:.3f}, "
        f"GACL lam=1 {gacl:.3f} (gate fired on {fired:.3f}); faithful under GACL lam=1 {faithful_gacl:.3f}")
  assert joint <= 0.1
  assert gacl >= joint + 0.6 and gacl_default >= joint + 0.25 and fired >= 0.8
  assert faithful_gacl >= 0.8
