"""Patching invariants: empty patch, self patch, answer-side last layer, vmap == loop, attribution."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalm import patching
from jaxalm.branches import Scorer
from jaxalm.nn.sites import Patch
from test_scoring import make_items


@pytest.fixture(scope="module")
def setup(tiny):
  model = tiny.model()
  items, waves = make_items(3)
  scorer = Scorer(model, ("joint", "same_audio"), load_media=waves.__getitem__)
  batch = patching.build_batch(scorer, items)
  values, s_j, s_a = patching.source_values(model.params, model.forward, batch)
  return model, scorer, batch, values, s_j, s_a


@functools.cache
def _fwd(forward):
  return jax.jit(forward)


@functools.cache
def _fwd_capture(forward):
  return jax.jit(forward, static_argnames="capture")


def _margins(batch, scores):
  return patching.candidate_margins(scores, jnp.asarray(batch.cand_mask), jnp.asarray(batch.ya),
                                    jnp.asarray(batch.yt))


def test_clean_rows_match_shared_prefix_scoring(setup):
  model, scorer, batch, _, s_j, s_a = setup
  per = scorer.score_plans([scorer.plan(it) for it in batch.items])
  z_j, _ = _margins(batch, s_j)
  for i, p in enumerate(per):
    c = len(batch.items[i].candidates)
    np.testing.assert_allclose(np.asarray(z_j[i, :c]), np.asarray(jax.nn.log_softmax(p["joint"])), atol=1e-4)


def test_roles_are_aligned(setup):
  _, _, batch, _, _, _ = setup
  for r in range(batch.target_roles.shape[0]):
    t, s, a, ok = batch.target_roles[r], batch.source_roles[r], batch.align[r], batch.aligned[r]
    assert (t == patching.ROLE_ID["evidence"]).sum() > 0 and (s == patching.ROLE_ID["evidence"]).sum() == 0
    assert (t[ok] == s[a[ok]]).all()
    for role in ("audio", "answer", "instruction"):
      assert ok[t == patching.ROLE_ID[role]].all()
    # the answer-side span is the same tokens in both branches
    ans = t == patching.ROLE_ID["answer"]
    ids_t = batch.target["input_ids"][r]
    ids_s = batch.source["input_ids"][r]
    np.testing.assert_array_equal(ids_t[ans], ids_s[a[ans]])


def test_empty_patch_equals_no_patch(setup):
  model, _, batch, values, _, _ = setup
  fwd = _fwd(model.forward)
  clean = fwd(model.params, **batch.target).logits
  empty = {site: Patch(values[site], jnp.zeros(values[site].shape[:-1], bool)) for site in patching.SITES}
  patched = fwd(model.params, **batch.target, patch=empty).logits
  np.testing.assert_array_equal(np.asarray(clean), np.asarray(patched))


def test_self_patch_equals_clean_run(setup):
  model, _, batch, _, _, _ = setup
  fwd = jax.jit(model.forward, static_argnames="capture")
  out = fwd(model.params, **batch.target, capture=patching.SITES)
  full = {site: Patch(out.captures[site], jnp.ones(out.captures[site].shape[:-1], bool)) for site in patching.SITES}
  patched = fwd(model.params, **batch.target, patch=full).logits
  assert np.abs(np.asarray(patched) - np.asarray(out.logits)).max() <= 1e-5


def test_answer_side_last_layer_patch_reproduces_source_logits(setup):
  model, _, batch, values, _, _ = setup
  last = model.config.text.num_layers - 1
  role = batch.target_roles == patching.ROLE_ID["answer"]
  mask = (jnp.arange(last + 1) == last)[:, None, None] & jnp.asarray(role & batch.aligned)[None]
  fwd = _fwd(model.forward)
  patched = np.asarray(fwd(model.params, **batch.target, patch={"lm.resid_post": Patch(values["lm.resid_post"], mask)}).logits)
  source = np.asarray(fwd(model.params, **batch.source).logits)
  clean = np.asarray(fwd(model.params, **batch.target).logits)
  for r in range(role.shape[0]):
    t_last = np.flatnonzero(role[r])[-1]
    s_last = batch.align[r, t_last]
    assert np.abs(patched[r, t_last] - source[r, s_last]).max() <= 1e-5
    assert np.abs(clean[r, t_last] - source[r, s_last]).max() > 1e-3  # the patch did something


def test_vmapped_sweep_equals_loop_and_chunking(setup):
  model, _, batch, values, _, _ = setup
  specs = patching.make_specs(model.config.text.num_layers)
  arrays = patching.arrays(batch)
  z, m = patching.sweep(model.params, arrays, values, jnp.asarray(specs), forward=model.forward)
  z2, m2 = patching.sweep(model.params, arrays, values, jnp.asarray(specs), forward=model.forward, chunk=5)
  np.testing.assert_allclose(np.asarray(m), np.asarray(m2), atol=1e-5)
  fwd = _fwd(model.forward)
  for k in (0, 7, len(specs) - 1):
    si, layer, role = specs[k]
    pos = (batch.target_roles == role) & batch.aligned
    patch = {}
    for j, site in enumerate(patching.SITES):
      mask = (j == si) & (np.arange(values[site].shape[0]) == layer)[:, None, None] & pos[None]
      patch[site] = Patch(values[site], jnp.asarray(mask))
    s, _ = patching._scores(model.params, _fwd_capture(model.forward), batch.target, batch.target_label, 8, patch=patch)
    _, m_loop = _margins(batch, s)
    np.testing.assert_allclose(np.asarray(m[k]), np.asarray(m_loop), atol=1e-5)


def test_attribution_matches_finite_difference(setup):
  model, _, batch, values, _, _ = setup
  arrays = patching.arrays(batch)
  grads = patching.attribution(model.params, arrays, values, forward=model.forward)
  site, layer = "lm.resid_post", 0
  role = (batch.target_roles == patching.ROLE_ID["answer"]) & batch.aligned
  eps = 1e-2

  def total(alpha):
    patch = {site: Patch(values[site], alpha * jnp.asarray(role, jnp.float32)[None] *
                         (jnp.arange(values[site].shape[0]) == layer)[:, None, None])}
    s, _ = patching._scores(model.params, _fwd_capture(model.forward), batch.target, batch.target_label, 8,
                            patch=patch)
    return float(jnp.sum(_margins(batch, s)[1]))

  fd = (total(eps) - total(-eps)) / (2 * eps)
  est = float(np.sum(np.asarray(grads[site])[layer] * role))
  assert abs(fd - est) <= 1e-3 * max(1.0, abs(fd))
  by_role = patching.attribution_by_role(grads, batch)
  assert by_role.shape == (len(patching.SITES), model.config.text.num_layers, len(patching.PATCH_ROLES), 3)
  np.testing.assert_allclose(by_role[:, :, patching.PATCH_ROLES.index("audio")], 0.0, atol=1e-6)


def test_effects_and_site_table():
  m_j = np.array([-1.0, -2.0, 0.5, -0.5])
  m_a = np.array([1.0, 2.0, 1.0, -1.0])  # items 0 and 1 are repairable
  specs = np.array([[0, 0, patching.ROLE_ID["answer"]], [0, 1, patching.ROLE_ID["answer"]]])
  m_p = np.array([[0.5, -1.0, 0.5, -0.4], [0.9, 1.5, 0.6, -0.6]])
  eff = patching.effects(m_j, m_a, m_p > 0, m_p, specs, n_layers=2, sites=("lm.resid_post",), roles=("answer",))
  assert eff["rescue"][0, 0, 0] == 0.5 and eff["rescue"][0, 1, 0] == 1.0
  np.testing.assert_allclose(eff["displacement"][0, 1, 0], m_p[1] - m_j)
  table = patching.site_table(eff)
  assert table == [{"site": "lm.resid_post", "role": "answer", "peak_rescue": 1.0, "peak_layer": 1,
                    "rho_overall": table[0]["rho_overall"]}]
