"""Metrics on hand-made arrays, and reproduction of the published [ARB] figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from jaxalm import metrics as M

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "gacl"
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason=f"published [ARB] data not found at {REF}")


# ------------------------------------------------------------------------- by hand

def test_accuracies_by_hand():
  # 3 candidates; items 0-2 adversarial, 3-4 faithful.
  z = np.array([[0.0, -1, -2], [-1, 0, -2], [-1, -2, 0], [0, -1, -2], [-1, 0, -np.inf]])
  y_a = np.array([0, 0, 0, 0, 0])
  y_t = np.array([1, 1, 1, 0, 0])
  adv = np.array([True, True, True, False, False])
  assert M.conflict_accuracy(z, y_a, adv) == pytest.approx(100 / 3)
  assert M.text_follow(z, y_t, adv) == pytest.approx(100 / 3)   # item 2 picks neither
  assert M.faithful_accuracy(z, y_a, adv) == 50.0
  assert M.audio_reference_accuracy(z, y_a) == 40.0
  np.testing.assert_allclose(M.margins(z, y_a, y_t)[:3], [1.0, -1.0, 1.0])
  mask = np.array([[True, True, False]] * 5)
  assert M.predictions(z, mask).tolist() == [0, 1, 0, 0, 1]
  assert np.isnan(M.faithful_accuracy(z[:3], y_a[:3], adv[:3]))


def test_repairable_and_groups():
  m_a = np.array([1.0, 1.0, -1.0, 0.0, 2.0, 3.0])
  m_j = np.array([-1.0, 1.0, -1.0, -1.0, -0.5, 0.0])
  # only items 0 and 4 have M_A > 0 and M_J < 0 (0 is on neither side).
  assert M.repairable(m_a, m_j).tolist() == [True, False, False, False, True, False]
  assert M.repairable_rate(m_a, m_j) == pytest.approx(100 / 3)
  groups = M.rate_by_group(M.repairable(m_a, m_j), [("a", 1), ("a", 1), ("b", 1), ("b", 1), ("b", 2), ("b", 2)])
  assert groups == {("a", 1): 50.0, ("b", 1): 0.0, ("b", 2): 50.0}
  assert M.macro(groups) == pytest.approx(100 / 3)


def test_gate_proxy_fidelity_by_hand():
  assert M.proxy_fidelity([1, 1, 0, 0], [True, False, True, True]) == {
    "coverage": pytest.approx(100 / 3), "precision": 50.0}
  fid = M.gate_proxy_fidelity(r_a=[0.5, 0.0, 1.0], n_out=[1, 1, 0], m_a=[1.0, 2.0, 0.5], m_j=[-1.0, -1.0, 1.0])
  assert fid["R_A"] == {"coverage": pytest.approx(200 / 3), "precision": 100.0}
  assert fid["N_out"] == {"coverage": 100.0, "precision": 100.0}
  assert fid["R_A*N_out"] == {"coverage": 50.0, "precision": 100.0}


def test_operating_point_frontier_nauc_by_hand():
  p = M.operating_point(20.0, 97.0, 60.0, 93.5, {"lam": 1.0})
  assert (p.faithful_drop, p.conflict_gain) == (pytest.approx(3.5), 40.0)
  pts = [(0.0, 10.0), (2.0, 30.0), (7.0, 50.0)]
  np.testing.assert_allclose(M.frontier(pts, [0, 1.9, 2.0, 5, 7]), [10, 10, 30, 30, 50])
  assert M.frontier([(1.0, 5.0)], [0.5]).tolist() == [0.0]
  # On the 0.1 grid: 10 on [0, 1.9], a 0.1-wide trapezoid (10 + 30) / 2, 30 on [2, 5]:
  # area 19 + 2 + 90 = 111; / (5 * 100) * 100 = 22.2.
  assert M.nauc(pts, 5) == pytest.approx(22.2)
  assert M.nauc(np.array(pts), 5) == pytest.approx(22.2)
  ops = [M.OperatingPoint(d, g, 0.0, 0.0) for d, g in pts]
  assert M.nauc(ops, 5) == pytest.approx(22.2)
  assert M.nauc([], 5) == 0.0
  assert M.nauc_curve([0, 5], [0, 10], 5) == pytest.approx(5.0)  # triangle: 25 / 5


def test_bootstrap():
  rng = np.random.default_rng(0)
  flags = rng.random(300) < 0.4
  est, lo, hi = M.bootstrap_percent_ci(flags, n_draws=1000, seed=3)
  assert est == pytest.approx(100 * flags.mean()) and lo < est < hi
  # Same seed, same resampling: the generic path agrees with the vectorised one.
  g = M.bootstrap_ci(lambda f: 100 * f.mean(), flags, n_draws=1000, seed=3)
  assert g == pytest.approx((est, lo, hi))
  # Standard error of a proportion: the 95% interval is about +-1.96 sqrt(p(1-p)/n).
  half = 1.96 * 100 * np.sqrt(flags.mean() * (1 - flags.mean()) / flags.size)
  assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
  assert M.bootstrap_percent_ci(np.ones(50, bool)) == (100.0, 100.0, 100.0)
  # Joint resampling of two arrays keeps pairs together.
  x = np.arange(40.0)
  assert M.bootstrap_ci(lambda a, b: float(np.all(a == b)), x, x.copy(), n_draws=50)[1:] == (1.0, 1.0)


def test_spearman():
  # d = (0, 1, 1, 0): 1 - 6 * 2 / (4 * 15) = 0.8.
  assert M.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
  assert M.spearman([1, 2, 3], [10, 5, 0]) == pytest.approx(-1.0)
  np.testing.assert_allclose(M.spearman_by_layer([[1, 2, 3, 4], [4, 3, 2, 1]], [1, 3, 2, 4]), [0.8, -0.8])


def test_text_prior_decomposition_by_hand():
  full = np.array([1, 1, 1, 1, 0, 0], bool)
  none = np.array([1, 0, 0, 0, 1, 0], bool)
  frags = {2: np.array([[0, 0], [1, 0], [0, 0], [0, 0], [0, 0], [0, 0]], bool),
           3: np.zeros((6, 3), bool)}
  short = np.array([0, 0, 0, 1, 0, 0], bool)
  cats = M.tp_categories(full, none, frags, short)
  assert cats.tolist() == ["TS", "FS", "XS", "too_short", "AH", "UN"]
  assert M.tp_categories(full, none, frags).tolist() == ["TS", "FS", "XS", "XS", "AH", "UN"]
  dec = M.tp_decomposition(cats)
  assert {c: d["n"] for c, d in dec.items()} == {c: 1 for c in M.TP_CATEGORIES}
  assert M.cross_segment_share(cats) == 50.0
  assert M.text_prior_rate(full, none) == 50.0   # (2/6) / (4/6)
  # Without the too-short item: Acc_Full 3/5 = 60; N=2 chunks 1/5 and 0/5 -> 10; 10/60.
  r = M.retention(full, frags, short)
  assert r[2] == pytest.approx(100 / 6) and r[3] == 0.0


# ----------------------------------------------------------- published margins

PUBLISHED_REPAIRABLE = {
  "Qwen2-Audio": {"AQA": 76.0, "VSC": 77.5, "SER": 73.0, "ALME": 63.5},
  "Qwen2.5-Omni": {"AQA": 58.0, "VSC": 87.5, "SER": 75.0, "ALME": 36.0},
  "Voxtral": {"AQA": 66.5, "VSC": 69.0, "SER": 75.0, "ALME": 18.0},
  "Qwen3-Omni": {"AQA": 42.5, "VSC": 56.5, "SER": 60.5, "ALME": 7.5},
  "Kimi-Audio": {"AQA": 77.5, "VSC": 70.0, "SER": 69.0, "ALME": 49.0},
}


@pytest.fixture(scope="module")
def margin_rows():
  rows = [json.loads(l) for l in (REF / "margin_rows_r005.jsonl").read_text().splitlines() if l.strip()]
  assert len(rows) == 4000
  return rows


@needs_ref
def test_repairable_quadrant_per_cell(margin_rows):
  m_a = np.array([r["M_A"] for r in margin_rows])
  m_j = np.array([r["M_J"] for r in margin_rows])
  flags = M.repairable(m_a, m_j)
  np.testing.assert_array_equal(flags, [r["repairable_quadrant"] for r in margin_rows])
  cells = M.rate_by_group(flags, [(r["model"], r["task"].removeprefix("MCR-")) for r in margin_rows])
  assert len(cells) == 20
  for model, tasks in PUBLISHED_REPAIRABLE.items():
    for task, want in tasks.items():
      assert cells[(model, task)] == pytest.approx(want, abs=1e-9), (model, task)
  per_task = {t: M.macro({m: cells[(m, t)] for m in PUBLISHED_REPAIRABLE}) for t in ("AQA", "VSC", "SER", "ALME")}
  assert {t: round(v, 1) for t, v in per_task.items()} == {"AQA": 64.1, "VSC": 72.1, "SER": 70.5, "ALME": 34.8}
  assert round(M.repairable_rate(m_a, m_j), 1) == 60.4


@needs_ref
def test_text_follow_per_task(margin_rows):
  follow = M.rate_by_group([r["text_follow"] for r in margin_rows], [r["task"] for r in margin_rows])
  got = {t.removeprefix("MCR-"): round(v, 1) for t, v in follow.items()}
  assert got == {"AQA": 81.0, "VSC": 80.9, "SER": 85.0, "ALME": 39.9}


@needs_ref
def test_nauc_of_published_macro_frontier():
  rows = list(csv.DictReader((REF / "fig5_frontier_bootstrap.csv").open()))
  want = {"GACL": (33.22, 40.77), "AAD": (9.12, 13.85), "ACD": (7.43, 9.34)}
  for method, (w5, w10) in want.items():
    mine = [r for r in rows if r["method"] == method]
    budgets = [float(r["K_pp"]) for r in mine]
    gains = [float(r["best_conflict_gain_pp"]) for r in mine]
    assert round(M.nauc_curve(budgets, gains, 5), 2) == w5, method
    assert round(M.nauc_curve(budgets, gains, 10), 2) == w10, method
