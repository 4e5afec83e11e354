"""Decision rules on hand-made arrays (answers worked out by hand), jit/vmap, sweeps."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalm import correction as C
from jaxalm.metrics import OperatingPoint

Z_J = np.array([0.0, -1.0, -3.0])   # joint prefers candidate 0
Z_A = np.array([-2.0, 0.0, -1.0])   # reference prefers candidate 1, top1 - top2 = 1


def test_gacl_by_hand():
  # N_out = 1, margin 1, tau 0.5 -> R_A = 1, alpha = lam = 0.5: z = (z_J + z_A) / 2.
  z, alpha = C.gacl(Z_J, Z_A, lam=0.5, tau=0.5)
  assert float(alpha) == 0.5
  np.testing.assert_allclose(z, [-1.0, -0.5, -2.0])
  assert int(jnp.argmax(z)) == 1
  # tau 2 -> R_A = 0.5, alpha = 0.25: [-0.5, -0.75, -2.5], the joint answer stays.
  z, alpha = C.gacl(Z_J, Z_A, lam=0.5, tau=2.0)
  assert float(alpha) == 0.25
  np.testing.assert_allclose(z, [-0.5, -0.75, -2.5])
  assert int(jnp.argmax(z)) == 0


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_gacl_hard_gate_when_tau_nonpositive(tau):
  # margin 1 > 0 -> R_A = 1 regardless of its size.
  _, alpha = C.gacl(Z_J, Z_A, lam=0.5, tau=tau)
  assert float(alpha) == 0.5
  assert float(C.reference_reliability(np.array([0.0, -1e-3]), tau)) == 1.0
  assert float(C.reference_reliability(np.array([0.0, -1e-3]), 0.5)) == pytest.approx(2e-3)


def test_gacl_alpha_max_clips():
  z, alpha = C.gacl(Z_J, Z_A, lam=3.0, tau=0.5, alpha_max=1.0)
  assert float(alpha) == 1.0
  np.testing.assert_allclose(z, Z_A)  # full switch to the reference
  z, alpha = C.gacl(Z_J, Z_A, lam=2.0, tau=0.5, alpha_max=0.8)
  assert float(alpha) == pytest.approx(0.8)
  np.testing.assert_allclose(z, [-1.6, -0.2, -1.4], rtol=1e-6)


def test_gacl_no_correction_when_branches_agree():
  z_j, z_a = np.array([0.0, -1.0]), np.array([0.0, -5.0])
  z, alpha = C.gacl(z_j, z_a, lam=2.0, tau=0.5)
  assert float(alpha) == 0.0
  np.testing.assert_array_equal(z, z_j)
  assert float(C.disagreement(z_j, z_a)) == 0.0


def test_gacl_tied_reference_never_fires():
  # A ties between candidates 0 and 1 (argmax 0), J picks 1: disagreement, but margin 0.
  z_j, z_a = np.array([-3.0, -1.0, -2.0]), np.array([-1.0, -1.0, -3.0])
  assert float(C.disagreement(z_j, z_a)) == 1.0
  for tau in (0.5, 0.0):
    z, alpha = C.gacl(z_j, z_a, lam=2.0, tau=tau)
    assert float(alpha) == 0.0
    np.testing.assert_array_equal(z, z_j)


def test_aad_acd_direction():
  # The no-audio branch favours candidate 0 even more than J: contrasting it away
  # gives 2 z_J - z_N = [-1.5, -1.0] at alpha 1, i.e. candidate 1.
  z_j, z_n = np.array([-1.0, -2.0]), np.array([-0.5, -3.0])
  z = C.aad(z_j, z_n, alpha=1.0)
  np.testing.assert_allclose(z, [-1.5, -1.0])
  assert int(jnp.argmax(z)) == 1
  np.testing.assert_allclose(C.aad(z_j, z_n, alpha=0.0), z_j)
  np.testing.assert_allclose(C.acd(z_j, z_n, alpha=0.5), [-1.25, -1.5])


def test_hard_switch_and_naive():
  z, switched = C.hard_switch(Z_J, Z_A)
  assert float(switched) == 1.0
  np.testing.assert_allclose(z, Z_A)
  z, switched = C.hard_switch(np.array([0.0, -1.0]), np.array([0.0, -5.0]))
  assert float(switched) == 0.0
  np.testing.assert_allclose(z, [0.0, -1.0])
  # naive interpolation has no gate: it moves even when the branches agree.
  np.testing.assert_allclose(C.naive_interpolation(np.array([0.0, -1.0]), np.array([0.0, -5.0]), 0.5),
                             [0.0, -3.0])


def test_candidate_log_softmax_mask():
  z = C.candidate_log_softmax(np.array([[1.0, 2.0, 100.0]]), np.array([[True, True, False]]))
  want = np.array([1.0, 2.0]) - (2.0 + math.log1p(math.exp(-1.0)))
  np.testing.assert_allclose(z[0, :2], want, rtol=1e-6)
  assert np.isneginf(z[0, 2])


def test_padded_candidates():
  # Item 2 has only 2 candidates; padding is -inf and must never be chosen or produce nan.
  z_j = np.array([[0.0, -1.0, -3.0], [0.0, -2.0, -np.inf]])
  z_a = np.array([[-2.0, 0.0, -1.0], [-3.0, 0.0, -np.inf]])
  mask = np.isfinite(z_j)
  z, alpha = C.gacl(z_j, z_a, lam=1.0, tau=0.5, mask=mask)
  np.testing.assert_allclose(alpha, [1.0, 1.0])
  np.testing.assert_allclose(z[1, :2], [-3.0, 0.0])
  assert np.isneginf(z[1, 2]) and not np.isnan(np.asarray(z)).any()
  np.testing.assert_allclose(C.top2_margin(z_a, mask), [1.0, 3.0])


def test_gacl_step_by_hand():
  # vocab 5, trie allows tokens 0 and 2. J over {0, 2}: logits [2, 1]; A: [0, 3].
  lj = jnp.array([2.0, 10.0, 1.0, 0.0, 0.0])
  la = jnp.array([0.0, 10.0, 3.0, 0.0, 0.0])
  allowed = jnp.array([True, False, True, False, False])
  zj = np.array([2.0, 1.0]) - (2.0 + math.log1p(math.exp(-1.0)))
  za = np.array([0.0, 3.0]) - (3.0 + math.log1p(math.exp(-3.0)))
  # J argmax 0, A argmax 2 (margin 3 -> R_A = 1), alpha = lam = 0.5.
  scores, alpha = C.gacl_step(lj, la, allowed, 0.5, 0.5, 1.0, return_alpha=True)
  assert float(alpha) == 0.5
  np.testing.assert_allclose(np.asarray(scores)[[0, 2]], (zj + za) / 2, rtol=1e-6)
  assert np.isneginf(np.asarray(scores)[[1, 3, 4]]).all()
  assert int(jnp.argmax(scores)) == 2
  # Free-form (no trie): token 1 dominates both branches, no correction.
  scores = C.gacl_step(lj, la, None)
  assert int(jnp.argmax(scores)) == 1
  # Batched and jitted, with one row forced to a single token.
  step = jax.jit(C.gacl_step, static_argnames="return_alpha")
  allowed2 = jnp.stack([allowed, jnp.array([False, False, False, True, False])])
  s2 = step(jnp.stack([lj, lj]), jnp.stack([la, la]), allowed2, 0.5, 0.5, 1.0)
  np.testing.assert_allclose(s2[0], C.gacl_step(lj, la, allowed), rtol=1e-6)
  assert int(jnp.argmax(s2[1])) == 3 and float(s2[1, 3]) == 0.0


def test_vmap_and_jit_equal_loop():
  rng = np.random.default_rng(0)
  z_j = C.candidate_log_softmax(jnp.asarray(rng.normal(size=(8, 5)) * 3))
  z_a = C.candidate_log_softmax(jnp.asarray(rng.normal(size=(8, 5)) * 3))
  lam, tau = 1.25, 1.0
  vz, va = jax.jit(jax.vmap(lambda a, b: C.gacl(a, b, lam, tau)))(z_j, z_a)
  row = jax.jit(C.gacl)
  loop = [row(z_j[i], z_a[i], lam, tau) for i in range(8)]
  np.testing.assert_allclose(vz, np.stack([l[0] for l in loop]), rtol=1e-6)
  np.testing.assert_allclose(va, np.array([float(l[1]) for l in loop]), rtol=1e-6)
  jz, _ = row(z_j, z_a, lam, tau)   # the batched call itself
  np.testing.assert_allclose(jz, vz, rtol=1e-6)
  assert 0 < int((va > 0).sum()) < 8  # the example exercises both branches of the gate
  # vmap over the hyperparameters as well (what sweeps do).
  lams = jnp.array([0.5, 2.0])
  za_grid = jax.jit(jax.vmap(lambda l: C.gacl(z_j, z_a, l, tau)[1]))(lams)
  np.testing.assert_allclose(za_grid[1], np.clip(4 * np.asarray(za_grid[0]), 0, 1), rtol=1e-6)


@pytest.mark.parametrize("method", C.METHODS)
def test_decisions_invariant_to_candidate_log_softmax(method):
  rng = np.random.default_rng(1)
  raw = {b: rng.normal(size=(64, 4)) * 2 - rng.uniform(0, 30, size=(64, 1))
         for b in ("joint", "same_audio", "no_audio", "perturbed")}
  norm = {b: np.asarray(C.candidate_log_softmax(v)) for b, v in raw.items()}
  apply = jax.jit(C.apply_method, static_argnums=0)
  for params in C.method_grid(method):
    za, ga = apply(method, raw, params)
    zb, gb = apply(method, norm, params)
    np.testing.assert_array_equal(np.argmax(za, -1), np.argmax(zb, -1))
    if ga is not None:
      np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-6)


def test_apply_method_errors():
  with pytest.raises(KeyError, match="no_audio"):
    C.apply_method("aad", {"joint": Z_J, "same_audio": Z_A})
  with pytest.raises(ValueError, match="unknown method"):
    C.apply_method("dola", {"joint": Z_J})
  with pytest.raises(ValueError, match="takes"):
    C.apply_method("gacl", {"joint": Z_J, "same_audio": Z_A}, {"alpha": 1.0})


def test_grids():
  g = C.method_grid("gacl")
  assert len(g) == 12
  assert {(p["lam"], p["tau"]) for p in g} == {(l, t) for l in (0.5, 1.0, 1.25, 2.0) for t in (0.5, 1.0, 1.5)}
  fine = C.method_grid("gacl", fine=True)
  assert len(fine) > len(g) and {(p["lam"], p["tau"]) for p in g} <= {(p["lam"], p["tau"]) for p in fine}
  assert C.method_grid("hard_switch") == [{}]


def _toy():
  """2 candidates (0 = y_a, 1 = y_t). Margins M = z(0) - z(1) chosen per item.

  adversarial: M_J = -1 with M_A = +2 (repairable; GACL at alpha 0.5 gives +0.5),
               M_J = -1 with M_A = +0.5 (R_A = 1 at tau 0.5, 0.5 at tau 1;
               alpha 0.5 gives -0.25, alpha 1 gives +0.5), M_J = -3 with M_A = -1.
  faithful:    M_J = +1 with M_A = -4 (the reference is wrong: alpha 0.5 gives -1.5),
               M_J = +1 with M_A = +1 (x3).
  """
  m_j = np.array([-1.0, -1.0, -3.0, 1.0, 1.0, 1.0, 1.0])
  m_a = np.array([2.0, 0.5, -1.0, -4.0, 1.0, 1.0, 1.0])
  adv = np.array([True, True, True, False, False, False, False])
  pair = lambda m: np.stack([m, np.zeros_like(m)], axis=1)
  return {"joint": pair(m_j), "same_audio": pair(m_a)}, np.zeros(7, int), adv


def test_sweep_operating_points_by_hand():
  branches, y_a, adv = _toy()
  grid = [{"lam": 0.5, "tau": 0.5, "alpha_max": 1.0}, {"lam": 1.0, "tau": 0.5, "alpha_max": 1.0},
          {"lam": 1.0, "tau": 1.0, "alpha_max": 1.0}]
  pts = C.sweep("gacl", branches, y_a, adv, grid=grid)
  # joint: conflict 0/3, faithful 4/4.
  # lam 0.5 tau 0.5: item 0 fixed, item 1 not (alpha 0.5), faithful item 3 broken (alpha 0.5).
  assert pts[0].conflict_acc == pytest.approx(100 / 3) and pts[0].faithful_acc == 75.0
  assert pts[0].faithful_drop == 25.0 and pts[0].conflict_gain == pytest.approx(100 / 3)
  # lam 1 tau 0.5: alpha 1 on items 0, 1, 3 -> conflict 2/3, faithful 3/4.
  assert pts[1].conflict_acc == pytest.approx(200 / 3) and pts[1].faithful_acc == 75.0
  # lam 1 tau 1: item 1 has R_A 0.5 -> alpha 0.5 -> -0.25, still wrong; item 3 R_A = 1.
  assert pts[2].conflict_acc == pytest.approx(100 / 3)
  assert pts[2].params == grid[2]


def test_select_under_budget_by_hand():
  pts = [OperatingPoint(0.0, 10.0, 0, 0, {"k": 0}), OperatingPoint(4.0, 30.0, 0, 0, {"k": 1}),
         OperatingPoint(6.0, 50.0, 0, 0, {"k": 2}), OperatingPoint(5.0, 30.0, 0, 0, {"k": 3}),
         OperatingPoint(float("nan"), 99.0, 0, 0, {"k": 4})]
  assert C.select_under_budget(pts, 5.0).params == {"k": 1}   # tie at 30 -> smaller drop
  assert C.select_under_budget(pts, 3.0).params == {"k": 0}
  assert C.select_under_budget(pts, 6.0).params == {"k": 2}
  assert C.select_under_budget(pts, -1.0) is None


def test_reference_with_minus_inf_entries_never_gives_nan():
  # Free-form step: the reference branch suppresses token 2 entirely (-inf logit).
  lj = jnp.array([0.0, 1.0, 0.5])
  la = jnp.array([2.0, 0.0, -jnp.inf])
  s, alpha = C.gacl_step(lj, la, None, 0.5, 0.5, 1.0, return_alpha=True)
  assert float(alpha) == 0.5 and np.isneginf(float(s[2])) and not np.isnan(np.asarray(s)).any()
  # Agreeing branches: alpha 0, token 2 keeps its joint score.
  s, alpha = C.gacl_step(lj, jnp.array([0.0, 2.0, -jnp.inf]), None, return_alpha=True)
  assert float(alpha) == 0.0
  np.testing.assert_allclose(s, C.candidate_log_softmax(lj), rtol=1e-6)
