"""`jaxalm metrics SCORES.jsonl`: diagnostics and corrections from a score file, no model.

Reports the joint branch (conflict / faithful accuracy, text-follow, audio-reference
accuracy, repairable-quadrant rate, gate proxy fidelity) and one or more decision
rules at given hyperparameters, or selected under a faithfulness budget on a dev split
and reported on the test split (`--select`).
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

DEFAULT_METHOD = "gacl"


def register(subparsers) -> None:
  from jaxalm.correction import METHODS
  p = subparsers.add_parser("metrics", help="recompute diagnostics and corrections from a score file")
  p.add_argument("scores", help="per-item score file (JSONL, see jaxalm.scorefile)")
  p.add_argument("--method", action="append", choices=METHODS + ("all",),
                 help=f"decision rule to report (repeatable; 'all' = every rule the file's branches allow; "
                      f"default {DEFAULT_METHOD})")
  p.add_argument("--lambda", dest="lam", type=float, help="GACL lambda (default 0.5)")
  p.add_argument("--tau", type=float, help="GACL tau_A (default 0.5; <= 0 gives a hard gate)")
  p.add_argument("--alpha-max", type=float, help="GACL bound on alpha (default 1.0)")
  p.add_argument("--alpha", type=float, help="alpha of aad / acd (default 1.0) and naive (default 0.5)")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  p.add_argument("--select", action="store_true",
                 help="select hyperparameters on the dev split under --budget, report on the test split")
  p.add_argument("--split-field", default="split", help="item field naming the split (default: split)")
  p.add_argument("--dev", default="dev", help="dev split value (default: dev)")
  p.add_argument("--test", default="test", help="test split value (default: test)")
  p.add_argument("--budget", type=float, default=5.0, help="faithful-drop budget in pp (default 5)")
  p.add_argument("--fine-grid", action="store_true", help="use the finer selection grid")
  p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                 help="add 95%% bootstrap CIs of the accuracies from N draws (seed 0)")
  p.set_defaults(func=run)


class _UsageError(Exception):
  pass


def _num(x):
  if x is None:
    return None
  x = float(x)
  return None if math.isnan(x) else round(x, 6)


def _methods(args, arrays) -> list[str]:
  from jaxalm.correction import METHODS, REFERENCE_BRANCH
  chosen = args.method or [DEFAULT_METHOD]
  if "all" in chosen:
    return [m for m in METHODS if REFERENCE_BRANCH[m] in arrays.branches]
  out = []
  for m in chosen:
    if REFERENCE_BRANCH[m] not in arrays.branches:
      raise _UsageError(f"--method {m} needs the {REFERENCE_BRANCH[m]!r} branch in every item; "
                        f"the file has {sorted(arrays.branches)}")
    if m not in out:
      out.append(m)
  return out


def _params(args, method: str) -> dict:
  from jaxalm.correction import DEFAULT_PARAMS
  p = dict(DEFAULT_PARAMS[method])
  given = {"lam": args.lam, "tau": args.tau, "alpha_max": args.alpha_max, "alpha": args.alpha}
  for k, v in given.items():
    if v is not None and k in p:
      p[k] = v
  return p


def _check_flags(args, methods):
  from jaxalm.correction import DEFAULT_PARAMS
  flags = {"lam": "--lambda", "tau": "--tau", "alpha_max": "--alpha-max", "alpha": "--alpha"}
  for k, flag in flags.items():
    if getattr(args, k) is None:
      continue
    if args.select and k != "alpha_max":
      raise _UsageError(f"{flag} conflicts with --select (hyperparameters come from the grid)")
    if not any(k in DEFAULT_PARAMS[m] for m in methods):
      raise _UsageError(f"{flag} does not apply to {', '.join(methods)}")


def _ci(flags, where, n_draws):
  from jaxalm import metrics
  if not n_draws:
    return None
  _, lo, hi = metrics.bootstrap_percent_ci(np.asarray(flags)[where], n_draws=n_draws, seed=0)
  return None if math.isnan(lo) else [_num(lo), _num(hi)]


def joint_block(a, tau: float, n_draws: int = 0) -> dict:
  """Joint-branch diagnostics of ScoreArrays `a` (percentages)."""
  from jaxalm import correction, metrics
  zj, za = a.branches["joint"], a.branches["same_audio"]
  adv = a.adversarial
  pred = metrics.predictions(zj, a.mask)
  m_j = metrics.margins(zj, a.y_a, a.y_t)
  m_a = metrics.margins(za, a.y_a, a.y_t)
  r_a = np.asarray(correction.reference_reliability(za, tau, a.mask))
  n_out = np.asarray(correction.disagreement(zj, za, a.mask))
  fid = metrics.gate_proxy_fidelity(r_a[adv], n_out[adv], m_a[adv], m_j[adv])
  block = {
    "conflict_acc": _num(metrics.conflict_accuracy_from_pred(pred, a.y_a, adv)),
    "faithful_acc": _num(metrics.faithful_accuracy_from_pred(pred, a.y_a, adv)),
    "text_follow": _num(metrics.percent(pred == a.y_t, adv)),
    "audio_ref_acc": _num(metrics.audio_reference_accuracy(za, a.y_a, adv if adv.any() else None, a.mask)),
    "repairable_rate": _num(metrics.repairable_rate(m_a, m_j, adv)),
    "n_conflict": int(adv.sum()),
    "n_faithful": int((~adv).sum()),
    "gate_proxy": {k: {kk: _num(vv) for kk, vv in v.items()} for k, v in fid.items()},
  }
  if n_draws:
    block["conflict_acc_ci"] = _ci(pred == a.y_a, adv, n_draws)
    block["faithful_acc_ci"] = _ci(pred == a.y_a, ~adv, n_draws)
  return block


def method_block(a, method: str, params: dict, n_draws: int = 0) -> dict:
  """Accuracies of one rule at `params` on ScoreArrays `a`, with gain/drop vs joint."""
  from jaxalm import correction, metrics
  z, gate = correction.apply_method(method, a.branches, params, a.mask)
  pred = metrics.predictions(np.asarray(z), a.mask)
  adv = a.adversarial
  joint_pred = metrics.predictions(a.branches["joint"], a.mask)
  pt = metrics.operating_point(
    metrics.conflict_accuracy_from_pred(joint_pred, a.y_a, adv),
    metrics.faithful_accuracy_from_pred(joint_pred, a.y_a, adv),
    metrics.conflict_accuracy_from_pred(pred, a.y_a, adv),
    metrics.faithful_accuracy_from_pred(pred, a.y_a, adv), params)
  block = {
    "params": {k: _num(v) for k, v in params.items()},
    "conflict_acc": _num(pt.conflict_acc),
    "faithful_acc": _num(pt.faithful_acc),
    "conflict_gain": _num(pt.conflict_gain),
    "faithful_drop": _num(pt.faithful_drop),
  }
  if gate is not None:
    fired = np.asarray(gate) > 0
    block["gate_rate"] = _num(metrics.percent(fired, adv))
    block["faithful_gate_rate"] = _num(metrics.percent(fired, ~adv))
  if n_draws:
    block["conflict_acc_ci"] = _ci(pred == a.y_a, adv, n_draws)
    block["faithful_acc_ci"] = _ci(pred == a.y_a, ~adv, n_draws)
  return block


def summarize(arrays, args) -> dict:
  """The report as a dict (what --json prints)."""
  from jaxalm import correction
  methods = _methods(args, arrays)
  _check_flags(args, methods)
  tau = args.tau if args.tau is not None else correction.DEFAULT_PARAMS["gacl"]["tau"]
  report = {"scores": str(args.scores), "n_items": len(arrays)}
  if not args.select:
    report["joint"] = joint_block(arrays, tau, args.bootstrap)
    for m in methods:
      report[m] = method_block(arrays, m, _params(args, m), args.bootstrap)
    return report
  field = arrays.extra.get(args.split_field)
  if field is None:
    raise _UsageError(f"--select needs a {args.split_field!r} field on the items")
  dev, test = arrays.subset(field == args.dev), arrays.subset(field == args.test)
  for name, part in ((args.dev, dev), (args.test, test)):
    if not len(part):
      raise _UsageError(f"no items with {args.split_field} == {name!r}")
  if dev.adversarial.all() or not dev.adversarial.any():
    raise _UsageError(f"selection needs both adversarial and faithful items in the {args.dev!r} split")
  report.update(n_items=len(test), split={"field": args.split_field, "dev": args.dev, "test": args.test,
                                          "n_dev": len(dev), "n_test": len(test)})
  report["joint"] = joint_block(test, tau, args.bootstrap)
  for m in methods:
    grid = correction.method_grid(m, args.fine_grid)
    if m == "gacl" and args.alpha_max is not None:
      grid = [{**g, "alpha_max": args.alpha_max} for g in grid]
    dev_pt, _ = correction.select_and_report(m, dev, test, args.budget, grid)
    if dev_pt is None:
      report[m] = {"params": None, "conflict_acc": None, "faithful_acc": None,
                   "selection": {"budget_pp": args.budget, "n_grid": len(grid), "feasible": False}}
      continue
    block = method_block(test, m, dict(dev_pt.params), args.bootstrap)
    block["selection"] = {"budget_pp": args.budget, "n_grid": len(grid), "feasible": True,
                          "dev_conflict_acc": _num(dev_pt.conflict_acc), "dev_faithful_acc": _num(dev_pt.faithful_acc),
                          "dev_conflict_gain": _num(dev_pt.conflict_gain),
                          "dev_faithful_drop": _num(dev_pt.faithful_drop)}
    report[m] = block
  return report


def _fmt(x, width=9):
  return f"{'-':>{width}}" if x is None else f"{x:>{width}.1f}"


def format_table(report: dict) -> str:
  """A readable table of a report from `summarize`."""
  j = report["joint"]
  lines = [f"{report['scores']}: {j['n_conflict']} adversarial, {j['n_faithful']} faithful items"]
  if "split" in report:
    s = report["split"]
    lines.append(f"selected on {s['field']}={s['dev']} ({s['n_dev']} lines), reported on "
                 f"{s['field']}={s['test']} ({s['n_test']} lines)")
  lines.append(f"{'rule':<12}{'conflict':>9}{'faithful':>9}{'gain':>9}{'drop':>9}{'gate':>9}{'f-gate':>9}  params")
  lines.append(f"{'joint':<12}{_fmt(j['conflict_acc'])}{_fmt(j['faithful_acc'])}{_fmt(0.0)}{_fmt(0.0)}"
               f"{_fmt(None)}{_fmt(None)}")
  for name, b in report.items():
    if not isinstance(b, dict) or "params" not in b:
      continue
    if b["params"] is None:
      lines.append(f"{name:<12}  no setting within the {b['selection']['budget_pp']:g} pp budget on dev")
      continue
    params = " ".join(f"{k}={v:g}" for k, v in b["params"].items()) or "-"
    lines.append(f"{name:<12}{_fmt(b['conflict_acc'])}{_fmt(b['faithful_acc'])}{_fmt(b['conflict_gain'])}"
                 f"{_fmt(b['faithful_drop'])}{_fmt(b.get('gate_rate'))}{_fmt(b.get('faithful_gate_rate'))}  {params}")
  lines.append("(accuracies in %; gain, drop in pp vs joint; gate, f-gate: % of adversarial / faithful items "
               "where the rule changed the scores)")
  lines.append(f"joint: text-follow {_fmt(j['text_follow'], 0)}, audio-reference accuracy "
               f"{_fmt(j['audio_ref_acc'], 0)}, repairable quadrant {_fmt(j['repairable_rate'], 0)} "
               f"(% of adversarial items)")
  for k, v in j["gate_proxy"].items():
    lines.append(f"gate proxy {k:<10} coverage {_fmt(v['coverage'], 5)}  precision {_fmt(v['precision'], 5)}")
  return "\n".join(lines)


def run(args) -> int:
  from jaxalm.scorefile import ScoreFileError, read_scorefile, to_arrays
  try:
    items = read_scorefile(args.scores)
    if not items:
      raise _UsageError(f"{args.scores}: no items")
    import jax
    with jax.enable_x64(True):  # decide near-ties in float64, as the scores were written
      report = summarize(to_arrays(items), args)
  except (ScoreFileError, _UsageError, OSError) as e:
    print(f"jaxalm metrics: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(report) if args.json else format_table(report))
  return 0
