"""Decision rules over candidate scores or next-token logits (science.md section 4).

Every rule is a pure jnp function over arrays whose last axis is the candidate (or
vocabulary) axis, `[..., n]`; leading axes are batch axes, so the rules work under
`jax.jit` and `jax.vmap`. Candidate scores should first go through
`candidate_log_softmax` (decisions do not depend on it: every rule below shifts each
row by a constant at most, and the gate reads only differences within a branch).

`mask` (optional, bool `[..., n]`, broadcastable) marks the allowed entries: padding
of ragged candidate sets, or the tokens a prefix trie allows at a decoding step.
Disallowed entries come out as `-inf` and never win an argmax.

Rules:
  GACL         z = z_J + alpha (z_A - z_J),  alpha = clip(lam R_A N_out, 0, alpha_max)
  AAD / ACD    z = z_J + alpha (z_J - z_ref), ref = no-audio / perturbed-audio branch
  hard switch  z = z_A where N_out = 1, else z_J
  naive        z = z_J + alpha (z_A - z_J), alpha constant (no gate)

Hyperparameter sweeps (`sweep`, `select_under_budget`, `select_and_report`) turn a
rule and a grid into operating points `(faithful_drop, conflict_gain)` in percentage
points (science.md section 5).
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxalm import metrics

Array = jax.Array

METHODS = ("gacl", "aad", "acd", "hard_switch", "naive")
# The reference branch each method reads besides `joint`.
REFERENCE_BRANCH = {
  "gacl": "same_audio", "hard_switch": "same_audio", "naive": "same_audio",
  "aad": "no_audio", "acd": "perturbed",
}
DEFAULT_PARAMS = {
  "gacl": {"lam": 0.5, "tau": 0.5, "alpha_max": 1.0},
  "aad": {"alpha": 1.0},
  "acd": {"alpha": 1.0},
  "naive": {"alpha": 0.5},
  "hard_switch": {},
}
# [ARB] tuning grid for GACL; the finer grid and the alpha grids are our choice.
GACL_GRID = {"lam": (0.5, 1.0, 1.25, 2.0), "tau": (0.5, 1.0, 1.5)}
GACL_FINE_GRID = {
  "lam": tuple(0.25 * k for k in range(1, 13)),  # 0.25 .. 3.0
  "tau": tuple(0.25 * k for k in range(0, 9)),   # 0 (hard gate) .. 2.0
}
ALPHA_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
ALPHA_FINE_GRID = tuple(round(0.1 * k, 10) for k in range(1, 31))  # 0.1 .. 3.0
NAIVE_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


# ----------------------------------------------------------------------------- pieces

def _valid(z: Array, mask: Array | None) -> Array:
  """Allowed entries: `mask` where given, else where z is finite."""
  valid = jnp.isfinite(z)
  return valid if mask is None else jnp.logical_and(jnp.asarray(mask, bool), valid)


def _masked(z: Array, mask: Array | None) -> Array:
  return z if mask is None else jnp.where(mask, z, -jnp.inf)


def candidate_log_softmax(scores: Array, mask: Array | None = None) -> Array:
  """Log-softmax over the candidate (or allowed-token) axis.

  Args:
    scores: [..., n] raw candidate log-probabilities or next-token logits.
    mask: optional bool [..., n]; False entries are excluded and come out -inf.
  Returns:
    z: [..., n] with logsumexp over allowed entries = 0.
  """
  x = _masked(jnp.asarray(scores), mask)
  m = jnp.max(x, axis=-1, keepdims=True)
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  lse = m + jnp.log(jnp.sum(jnp.exp(x - m), axis=-1, keepdims=True))
  return x - lse


def disagreement(z_joint: Array, z_audio: Array, mask: Array | None = None) -> Array:
  """N_out = 1[argmax z_A != argmax z_J]: [..., n] x2 -> [...] float."""
  a = jnp.argmax(_masked(z_joint, mask), axis=-1)
  b = jnp.argmax(_masked(z_audio, mask), axis=-1)
  return (a != b).astype(jnp.result_type(z_joint, jnp.float32))


def top2_margin(z: Array, mask: Array | None = None) -> Array:
  """z(top1) - z(top2) over the allowed entries: [..., n] -> [...] (inf if one entry)."""
  x = _masked(jnp.asarray(z), mask)
  if x.shape[-1] < 2:
    return jnp.full(x.shape[:-1], jnp.inf, x.dtype)
  top = jax.lax.top_k(x, 2)[0]
  # top2 = -inf (a single allowed entry) gives an infinite margin.
  return jnp.where(jnp.isneginf(top[..., 1]), jnp.inf, top[..., 0] - top[..., 1])


def reference_reliability(z_audio: Array, tau: float | Array = 0.5,
                          mask: Array | None = None) -> Array:
  """R_A = clip(margin / tau, 0, 1); for tau <= 0, 1[margin > 0]. [..., n] -> [...]."""
  margin = top2_margin(z_audio, mask)
  tau = jnp.asarray(tau, margin.dtype)
  soft = jnp.clip(margin / jnp.where(tau > 0, tau, 1.0), 0.0, 1.0)
  hard = (margin > 0).astype(margin.dtype)
  return jnp.where(tau > 0, soft, hard)


def _interpolate(z_joint: Array, z_other: Array, alpha: Array, mask: Array | None,
                 sign: float) -> Array:
  """z_J + sign * alpha * (z_other - z_J), -inf outside the allowed entries.

  An allowed entry where z_other is -inf moves to -/+inf when alpha > 0 and stays at
  z_J when alpha = 0 (never nan).
  """
  valid = _valid(z_joint, mask)
  zj = jnp.where(valid, z_joint, 0.0)
  diff = jnp.where(valid, z_other - zj, 0.0)
  alpha = jnp.asarray(alpha, zj.dtype)[..., None]
  step = jnp.where(alpha > 0, sign * alpha * diff, 0.0)
  return jnp.where(valid, zj + step, -jnp.inf)


# ------------------------------------------------------------------------------ rules

def gacl_alpha(z_joint: Array, z_audio: Array, lam: float | Array = 0.5,
               tau: float | Array = 0.5, alpha_max: float | Array = 1.0,
               mask: Array | None = None) -> Array:
  """alpha = clip(lam * R_A * N_out, 0, alpha_max): [..., n] x2 -> [...]."""
  gate = reference_reliability(z_audio, tau, mask) * disagreement(z_joint, z_audio, mask)
  return jnp.clip(jnp.asarray(lam, gate.dtype) * gate, 0.0, alpha_max)


def gacl(z_joint: Array, z_audio: Array, lam: float | Array = 0.5, tau: float | Array = 0.5,
         alpha_max: float | Array = 1.0, mask: Array | None = None) -> tuple[Array, Array]:
  """Gated Audio Counterfactual Logit correction.

  Args:
    z_joint: [..., n] candidate scores of the joint branch J.
    z_audio: [..., n] candidate scores of the same-audio reference A.
    lam, tau, alpha_max: gate strength, reliability temperature, bound on alpha.
    mask: optional bool [..., n] of allowed entries.
  Returns:
    (z_corrected [..., n], alpha [...]).
  """
  alpha = gacl_alpha(z_joint, z_audio, lam, tau, alpha_max, mask)
  return _interpolate(z_joint, z_audio, alpha, mask, 1.0), alpha


def contrastive(z_joint: Array, z_ref: Array, alpha: float | Array,
                mask: Array | None = None) -> Array:
  """z_J + alpha (z_J - z_ref): [..., n] x2 -> [..., n]."""
  alpha = jnp.broadcast_to(jnp.asarray(alpha), jnp.shape(z_joint)[:-1])
  return _interpolate(z_joint, z_ref, alpha, mask, -1.0)


def aad(z_joint: Array, z_noaudio: Array, alpha: float | Array = 1.0,
        mask: Array | None = None) -> Array:
  """Audio-aware decoding: contrast J with the no-audio branch N. [..., n] -> [..., n]."""
  return contrastive(z_joint, z_noaudio, alpha, mask)


def acd(z_joint: Array, z_perturbed: Array, alpha: float | Array = 1.0,
        mask: Array | None = None) -> Array:
  """Audio contrastive decoding: contrast J with the perturbed-audio branch P."""
  return contrastive(z_joint, z_perturbed, alpha, mask)


def hard_switch(z_joint: Array, z_audio: Array, mask: Array | None = None) -> tuple[Array, Array]:
  """z_A where the branches disagree, else z_J. Returns (z [..., n], switched [...])."""
  switched = disagreement(z_joint, z_audio, mask)
  return _interpolate(z_joint, z_audio, switched, mask, 1.0), switched


def naive_interpolation(z_joint: Array, z_audio: Array, alpha: float | Array = 0.5,
                        mask: Array | None = None) -> Array:
  """z_J + alpha (z_A - z_J) with a constant alpha (no gate): [..., n] -> [..., n]."""
  alpha = jnp.broadcast_to(jnp.asarray(alpha), jnp.shape(z_joint)[:-1])
  return _interpolate(z_joint, z_audio, alpha, mask, 1.0)


def gacl_step(logits_joint: Array, logits_audio: Array, allowed_mask: Array | None = None,
              lam: float | Array = 0.5, tau: float | Array = 0.5,
              alpha_max: float | Array = 1.0, return_alpha: bool = False):
  """One generation-time GACL step over next-token logits.

  Both branches are restricted to the allowed tokens (a prefix-trie step; None for
  free-form generation), log-softmaxed over that set, and combined by the GACL rule.
  The caller appends argmax of the result to both branches.

  Args:
    logits_joint, logits_audio: [..., vocab] next-token logits of J and A.
    allowed_mask: optional bool [..., vocab].
  Returns:
    scores [..., vocab] (-inf outside the allowed set); with return_alpha, (scores, alpha [...]).
  """
  z_j = candidate_log_softmax(logits_joint.astype(jnp.float32), allowed_mask)
  z_a = candidate_log_softmax(logits_audio.astype(jnp.float32), allowed_mask)
  scores, alpha = gacl(z_j, z_a, lam, tau, alpha_max, allowed_mask)
  return (scores, alpha) if return_alpha else scores


def apply_method(method: str, branches: Mapping[str, Array], params: Mapping[str, Any] | None = None,
                 mask: Array | None = None) -> tuple[Array, Array | None]:
  """Applies a named rule with its parameters (defaults from DEFAULT_PARAMS).

  Args:
    method: one of METHODS.
    branches: branch name -> [..., n] scores (`joint` and the method's reference).
  Returns:
    (z [..., n], gate [...] or None): the gate is alpha (gacl) or the switch (hard_switch).
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
  ref = REFERENCE_BRANCH[method]
  if "joint" not in branches or ref not in branches:
    raise KeyError(f"method {method!r} needs branches 'joint' and {ref!r}; have {sorted(branches)}")
  p = {**DEFAULT_PARAMS[method], **(params or {})}
  unknown = set(p) - set(DEFAULT_PARAMS[method])
  if unknown:
    raise ValueError(f"method {method!r} takes {sorted(DEFAULT_PARAMS[method])}, got {sorted(unknown)}")
  zj, zr = branches["joint"], branches[ref]
  if method == "gacl":
    return gacl(zj, zr, p["lam"], p["tau"], p["alpha_max"], mask)
  if method == "hard_switch":
    return hard_switch(zj, zr, mask)
  if method == "naive":
    return naive_interpolation(zj, zr, p["alpha"], mask), None
  return contrastive(zj, zr, p["alpha"], mask), None


# ----------------------------------------------------------------------------- sweeps

def method_grid(method: str, fine: bool = False, alpha_max: float = 1.0) -> list[dict]:
  """The hyperparameter grid of a method, as a list of parameter dicts."""
  if method == "gacl":
    g = GACL_FINE_GRID if fine else GACL_GRID
    return [{"lam": l, "tau": t, "alpha_max": alpha_max} for l, t in itertools.product(g["lam"], g["tau"])]
  if method in ("aad", "acd"):
    return [{"alpha": a} for a in (ALPHA_FINE_GRID if fine else ALPHA_GRID)]
  if method == "naive":
    return [{"alpha": a} for a in NAIVE_GRID]
  if method == "hard_switch":
    return [{}]
  raise ValueError(f"unknown method {method!r}")


def grid_predictions(method: str, branches: Mapping[str, Array], grid: Sequence[Mapping[str, Any]],
                     mask: Array | None = None) -> np.ndarray:
  """Decisions of a method at every grid point: [n_items, n] -> [n_grid, n_items].

  One jitted vmap over the grid, in float64 (numpy inputs keep their precision).
  """
  grid = list(grid)
  keys = sorted(grid[0]) if grid else []
  values = {k: np.asarray([g[k] for g in grid], np.float64) for k in keys}

  def decide(p):
    z, _ = apply_method(method, branches, p, mask)
    return jnp.argmax(z, axis=-1)

  with jax.enable_x64(True):  # float64 host-side analysis: near-ties decide as in numpy
    values = {k: jnp.asarray(v, jnp.float64) for k, v in values.items()}
    if not keys:
      return np.asarray(jax.jit(decide)({}))[None]
    return np.asarray(jax.jit(jax.vmap(decide))(values))


def sweep(method: str, branches: Mapping[str, Array], y_a: Array, adversarial: Array,
          mask: Array | None = None, grid: Sequence[Mapping[str, Any]] | None = None,
          fine: bool = False) -> list[metrics.OperatingPoint]:
  """Operating points of a method over a grid, relative to the joint branch.

  Args:
    branches: name -> [n_items, n] candidate scores.
    y_a: [n_items] index of the audio-supported candidate.
    adversarial: [n_items] bool; True = conflict item, False = faithful item.
    grid: parameter dicts (default `method_grid(method, fine)`).
  Returns:
    One OperatingPoint per grid entry, in grid order.
  """
  grid = method_grid(method, fine) if grid is None else list(grid)
  y_a = np.asarray(y_a)
  adversarial = np.asarray(adversarial, bool)
  joint_pred = metrics.predictions(branches["joint"], mask)
  j_conf = metrics.conflict_accuracy_from_pred(joint_pred, y_a, adversarial)
  j_faith = metrics.faithful_accuracy_from_pred(joint_pred, y_a, adversarial)
  preds = grid_predictions(method, branches, grid, mask)
  points = []
  for params, pred in zip(grid, preds):
    points.append(metrics.operating_point(
      j_conf, j_faith,
      metrics.conflict_accuracy_from_pred(pred, y_a, adversarial),
      metrics.faithful_accuracy_from_pred(pred, y_a, adversarial),
      params=dict(params)))
  return points


def select_under_budget(points: Sequence[metrics.OperatingPoint],
                        budget_pp: float = 5.0) -> metrics.OperatingPoint | None:
  """Best conflict gain among points with faithful_drop <= budget (None if none).

  Ties go to the smaller faithful drop, then to the earlier grid entry.
  """
  best = None
  for p in points:
    if not np.isfinite(p.faithful_drop) or p.faithful_drop > budget_pp + metrics.BUDGET_EPS:
      continue
    if best is None or (p.conflict_gain, -p.faithful_drop) > (best.conflict_gain, -best.faithful_drop):
      best = p
  return best


def select_and_report(method: str, dev: Any, test: Any, budget_pp: float = 5.0,
                      grid: Sequence[Mapping[str, Any]] | None = None, fine: bool = False):
  """Selects a method's hyperparameters on dev under a faithfulness budget, reports on test.

  Args:
    dev, test: objects with `branches` (name -> [n_items, n]), `mask`, `y_a`, `adversarial`
      (e.g. `jaxalm.scorefile.ScoreArrays`).
  Returns:
    (dev_point or None, test_point or None): the selected dev operating point and the
    same hyperparameters evaluated on test.
  """
  points = sweep(method, dev.branches, dev.y_a, dev.adversarial, dev.mask, grid, fine)
  chosen = select_under_budget(points, budget_pp)
  if chosen is None:
    return None, None
  test_point = sweep(method, test.branches, test.y_a, test.adversarial, test.mask, [chosen.params])[0]
  return chosen, test_point
