"""Diagnostics and evaluation metrics (science.md sections 3, 5 and 7).

Numpy functions vectorised over items. Accuracies and rates are percentages; a rate
over an empty set is nan. Candidate arrays are `[n_items, n]` with padding / disallowed
entries at -inf (or named by a bool `mask`); candidate labels are given as indices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np

BUDGET_EPS = 1e-9  # tolerance on faithful_drop <= budget (drops are differences of percentages)
TP_CATEGORIES = ("TS", "FS", "XS", "AH", "UN", "too_short")


# ------------------------------------------------------------------- basic quantities

def predictions(z, mask=None) -> np.ndarray:
  """argmax over the candidate axis: [..., n] -> [...] int."""
  z = np.asarray(z)
  if mask is not None:
    z = np.where(mask, z, -np.inf)
  return np.argmax(z, axis=-1)


def margins(z, y_a, y_t) -> np.ndarray:
  """M = z(y_a) - z(y_t): [n_items, n], [n_items] x2 -> [n_items]."""
  z = np.asarray(z)
  take = lambda y: np.take_along_axis(z, np.asarray(y)[..., None], axis=-1)[..., 0]
  return take(y_a) - take(y_t)


def percent(flags, where=None) -> float:
  """100 * mean(flags[where]); nan when empty."""
  flags = np.asarray(flags, bool)
  if where is not None:
    flags = flags[np.asarray(where, bool)]
  return float(100.0 * flags.mean()) if flags.size else float("nan")


def conflict_accuracy_from_pred(pred, y_a, adversarial) -> float:
  """Share of adversarial items decided for y_a (%)."""
  return percent(np.asarray(pred) == np.asarray(y_a), adversarial)


def faithful_accuracy_from_pred(pred, y_a, adversarial) -> float:
  """Share of faithful (non-adversarial) items decided for y_a (%)."""
  return percent(np.asarray(pred) == np.asarray(y_a), ~np.asarray(adversarial, bool))


def conflict_accuracy(z_joint, y_a, adversarial, mask=None) -> float:
  """[ARB] conflict accuracy: argmax z_J == y_a on adversarial items (%)."""
  return conflict_accuracy_from_pred(predictions(z_joint, mask), y_a, adversarial)


def text_follow(z_joint, y_t, adversarial, mask=None) -> float:
  """Share of adversarial items with argmax z_J == y_t (%)."""
  return percent(predictions(z_joint, mask) == np.asarray(y_t), adversarial)


def faithful_accuracy(z, y_a, adversarial, mask=None) -> float:
  """Accuracy on faithful items (%)."""
  return faithful_accuracy_from_pred(predictions(z, mask), y_a, adversarial)


def audio_reference_accuracy(z_audio, y_a, where=None, mask=None) -> float:
  """Accuracy of the same-audio reference A (%), over `where` (default all items)."""
  return percent(predictions(z_audio, mask) == np.asarray(y_a), where)


def repairable(m_a, m_j) -> np.ndarray:
  """Repairable quadrant (sign flip): M_A > 0 and M_J < 0. [n] x2 -> [n] bool."""
  return (np.asarray(m_a) > 0) & (np.asarray(m_j) < 0)


def repairable_rate(m_a, m_j, where=None) -> float:
  """Share of (adversarial) items in the repairable quadrant (%)."""
  return percent(repairable(m_a, m_j), where)


def rate_by_group(flags, keys: Sequence[Sequence[Hashable]] | Sequence[Hashable]) -> dict:
  """Percent of True per group.

  Args:
    flags: [n] bool.
    keys: [n] group keys (e.g. tuples (model, task)).
  Returns:
    {key: percent}, keys in first-seen order.
  """
  flags = np.asarray(flags, bool)
  keys = [tuple(k) if isinstance(k, (list, tuple)) else k for k in keys]
  groups: dict = {}
  for i, k in enumerate(keys):
    groups.setdefault(k, []).append(i)
  return {k: percent(flags[idx]) for k, idx in groups.items()}


def macro(values: Mapping[Any, float] | Sequence[float]) -> float:
  """Unweighted mean of per-cell figures."""
  v = list(values.values()) if isinstance(values, Mapping) else list(values)
  return float(np.mean(v)) if v else float("nan")


def proxy_fidelity(proxy, oracle) -> dict:
  """Coverage P(proxy | oracle) and precision P(oracle | proxy) of a bool proxy (%)."""
  proxy = np.asarray(proxy) > 0
  oracle = np.asarray(oracle, bool)
  return {"coverage": percent(proxy, oracle), "precision": percent(oracle, proxy)}


def gate_proxy_fidelity(r_a, n_out, m_a, m_j) -> dict:
  """[ARB] gate proxy fidelity on adversarial items.

  Args:
    r_a: [n] reference reliability R_A; n_out: [n] disagreement; m_a, m_j: [n] margins.
  Returns:
    {"R_A": ..., "N_out": ..., "R_A*N_out": ...}, each {coverage, precision} for the
    oracles M_A > 0, M_J < 0 and the repairable quadrant.
  """
  r_a, n_out = np.asarray(r_a), np.asarray(n_out)
  return {
    "R_A": proxy_fidelity(r_a > 0, np.asarray(m_a) > 0),
    "N_out": proxy_fidelity(n_out > 0, np.asarray(m_j) < 0),
    "R_A*N_out": proxy_fidelity(r_a * n_out > 0, repairable(m_a, m_j)),
  }


# ------------------------------------------------------------------ operating points

@dataclasses.dataclass(frozen=True)
class OperatingPoint:
  """A method at one hyperparameter setting (percentages / percentage points)."""
  faithful_drop: float
  conflict_gain: float
  conflict_acc: float
  faithful_acc: float
  params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def operating_point(joint_conflict_acc: float, joint_faithful_acc: float, conflict_acc: float,
                    faithful_acc: float, params: Mapping[str, Any] | None = None) -> OperatingPoint:
  """faithful_drop = faithful(joint) - faithful(method); conflict_gain = conflict(method) - conflict(joint)."""
  return OperatingPoint(
    faithful_drop=float(joint_faithful_acc - faithful_acc),
    conflict_gain=float(conflict_acc - joint_conflict_acc),
    conflict_acc=float(conflict_acc), faithful_acc=float(faithful_acc), params=dict(params or {}))


def _drops_gains(points) -> tuple[np.ndarray, np.ndarray]:
  points = points if isinstance(points, np.ndarray) else list(points)
  if len(points) and isinstance(points[0], OperatingPoint):
    return (np.array([p.faithful_drop for p in points], float),
            np.array([p.conflict_gain for p in points], float))
  arr = np.asarray(points, float).reshape(-1, 2)
  return arr[:, 0], arr[:, 1]


def frontier(points, budgets) -> np.ndarray:
  """Best conflict_gain among points with faithful_drop <= b, 0 if none.

  Args:
    points: OperatingPoints or [k, 2] array of (faithful_drop, conflict_gain).
    budgets: [m] budgets in pp.
  Returns:
    [m] frontier values.
  """
  drops, gains = _drops_gains(points)
  budgets = np.atleast_1d(np.asarray(budgets, float))
  ok = drops[None, :] <= budgets[:, None] + BUDGET_EPS
  vals = np.where(ok, gains[None, :], -np.inf).max(axis=1, initial=-np.inf)
  return np.where(ok.any(axis=1), vals, 0.0)


def budget_grid(max_budget: float, step: float = 0.1) -> np.ndarray:
  """Budgets 0, step, ..., max_budget (pp)."""
  n = int(round(max_budget / step))
  return np.round(np.arange(n + 1) * step, 10)


def nauc_curve(budgets, values, max_budget: float, step: float = 0.1) -> float:
  """nAUC@0-B of a frontier given as a curve (linear between its points), x100.

  Trapezoid over budgets 0..B on the `step` pp grid plus the curve's own budgets (so a
  curve sampled off the grid, e.g. every 0.25 pp, keeps its corners), divided by
  B * 100 and reported as a percentage.
  """
  budgets = np.asarray(budgets, float)
  order = np.argsort(budgets, kind="stable")
  budgets, values = budgets[order], np.asarray(values, float)[order]
  inside = budgets[(budgets > 0) & (budgets < max_budget)]
  grid = np.union1d(budget_grid(max_budget, step), inside)
  f = np.interp(grid, budgets, values)
  return float(np.trapezoid(f, grid) / (max_budget * 100.0) * 100.0)


def nauc(points, max_budget: float, step: float = 0.1) -> float:
  """nAUC@0-B of the frontier of a set of operating points (x100)."""
  grid = budget_grid(max_budget, step)
  return nauc_curve(grid, frontier(points, grid), max_budget, step)


# ------------------------------------------------------------------------- statistics

def bootstrap_ci(statistic: Callable[..., float], *arrays, n_draws: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
  """Percentile bootstrap over items (resampled with replacement, jointly across arrays).

  Args:
    statistic: f(*arrays) -> float, arrays indexed by item on axis 0.
  Returns:
    (estimate on the full sample, lower, upper).
  """
  arrays = [np.asarray(a) for a in arrays]
  n = len(arrays[0])
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, n, size=(n_draws, n))
  draws = np.array([statistic(*[a[i] for a in arrays]) for i in idx], float)
  lo, hi = np.nanpercentile(draws, [50 * (1 - level), 50 * (1 + level)])
  return float(statistic(*arrays)), float(lo), float(hi)


def bootstrap_percent_ci(flags, n_draws: int = 1000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float, float]:
  """bootstrap_ci of percent(flags), vectorised: [n] bool -> (estimate, lower, upper)."""
  flags = np.asarray(flags, bool)
  if flags.size == 0:
    return (float("nan"),) * 3
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, flags.size, size=(n_draws, flags.size))
  draws = 100.0 * flags[idx].mean(axis=1)
  lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
  return percent(flags), float(lo), float(hi)


def spearman(x, y) -> float:
  """Spearman rank correlation of two [n] arrays."""
  from scipy import stats
  return float(stats.spearmanr(np.asarray(x, float), np.asarray(y, float)).statistic)


def spearman_by_layer(x, y) -> np.ndarray:
  """Per-layer Spearman rho: x [n_layers, n], y [n] -> [n_layers]."""
  return np.array([spearman(row, y) for row in np.asarray(x, float)])


# ---------------------------------------------------------------- [TP] text prior

def text_prior_rate(full_correct, none_correct) -> float:
  """R_TP = Acc_None / Acc_Full (%)."""
  full = percent(full_correct)
  return 100.0 * percent(none_correct) / full if full > 0 else float("nan")


def retention(full_correct, fragment_correct: Mapping[int, Any], too_short=None) -> dict:
  """R_N = mean_k Acc_fragment(N, k) / Acc_Full (%), per N.

  Args:
    full_correct: [n] bool.
    fragment_correct: {N: [n, N] bool}, correctness with only chunk k of N.
    too_short: optional [n] bool; those items (no fragments) are left out of both
      accuracies (our choice).
  """
  full = np.asarray(full_correct, bool)
  keep = np.ones(full.shape, bool) if too_short is None else ~np.asarray(too_short, bool)
  acc_full = percent(full, keep)
  out = {}
  for n_chunks, frag in sorted(fragment_correct.items()):
    frag = np.asarray(frag, bool)[keep]
    acc = 100.0 * frag.mean(axis=0).mean() if frag.size else float("nan")
    out[n_chunks] = 100.0 * acc / acc_full if acc_full > 0 else float("nan")
  return out


def any_fragment_correct(fragment_correct: Mapping[int, Any]) -> np.ndarray:
  """Whether some fragment (any N, any k) is correct: {N: [n, N]} -> [n] bool."""
  return np.any(np.concatenate([np.asarray(f, bool) for f in fragment_correct.values()], axis=1), axis=1)


def tp_categories(full_correct, none_correct, fragment_correct, too_short=None) -> np.ndarray:
  """[TP] per-item category: TS, FS, XS, AH, UN, or too_short.

  Args:
    full_correct, none_correct: [n] bool.
    fragment_correct: {N: [n, N] bool} or [n] bool "some fragment correct".
    too_short: optional [n] bool; an audio-needed item (Full correct, None wrong) whose
      audio could not be split is `too_short` instead of FS/XS.
  Returns:
    [n] array of category strings.
  """
  full = np.asarray(full_correct, bool)
  none = np.asarray(none_correct, bool)
  frag = (any_fragment_correct(fragment_correct) if isinstance(fragment_correct, Mapping)
          else np.asarray(fragment_correct, bool))
  short = np.zeros_like(full) if too_short is None else np.asarray(too_short, bool)
  return np.select(
    [full & none, full & ~none & short, full & ~none & frag, full & ~none, ~full & none],
    ["TS", "too_short", "FS", "XS", "AH"], default="UN")


def tp_decomposition(categories) -> dict:
  """Counts and shares (%) of each category: {cat: {"n": int, "share": float}}."""
  cats = np.asarray(categories)
  return {c: {"n": int((cats == c).sum()), "share": percent(cats == c)} for c in TP_CATEGORIES}


def cross_segment_share(categories) -> float:
  """XS / (FS + XS) (%): audio-needed items that need the whole clip."""
  cats = np.asarray(categories)
  return percent(cats == "XS", (cats == "FS") | (cats == "XS"))
