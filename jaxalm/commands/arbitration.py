"""`jaxalm arbitration --model DIR --data FILE --out DIR`: the [ARB] arbitration study.

Writes OUT/scores.jsonl (per item and condition, as it goes; a rerun resumes it),
OUT/summary.json (diagnostics, GACL/AAD/ACD selected on dev under the faithful-drop budget
and reported on test, nAUC with bootstrap CIs), OUT/margins.png and OUT/frontier.png.
"""

from __future__ import annotations

import sys


def _branch_list(text: str) -> list[str]:
  return [b.strip() for b in text.replace(",", " ").split() if b.strip()]


def register(subparsers) -> None:
  from jaxalm.studies.arbitration import CORE_BRANCHES, OPTIONAL_BRANCHES
  p = subparsers.add_parser("arbitration",
                            help="score conflict items and report arbitration diagnostics and corrections")
  p.add_argument("--model", required=True, help="converted jaxalm checkpoint directory")
  p.add_argument("--data", required=True, help="benchmark file (.jsonl, .json or .csv)")
  p.add_argument("--out", required=True, help="output directory (created; an existing scores.jsonl is resumed)")
  p.add_argument("--format", choices=("mcr", "alme", "mc2"), help="benchmark format (default: inferred)")
  p.add_argument("--branches", type=_branch_list,
                 help=f"comma-separated branches from {', '.join(CORE_BRANCHES + OPTIONAL_BRANCHES)} "
                      "(default: joint,faithful,same_audio,no_audio,perturbed; joint and same_audio required)")
  p.add_argument("--batch-size", type=int, default=4, help="items per compiled call (default 4)")
  p.add_argument("--snr-db", type=float, default=0.0, help="SNR of the perturbed-audio branch in dB (default 0)")
  p.add_argument("--budget", type=float, default=5.0, help="faithful-drop budget in pp for the selection (default 5)")
  p.add_argument("--bootstrap", type=int, default=1000,
                 help="bootstrap draws of the confidence intervals (default 1000)")
  p.add_argument("--seed", type=int, default=0, help="seed of the dev/test split and of the bootstrap (default 0)")
  p.add_argument("--dev-fraction", type=float, default=0.5,
                 help="share of items without a split field put in dev (default 0.5)")
  p.add_argument("--fine-grid", action="store_true", help="select on the finer hyperparameter grid")
  p.add_argument("--media-root", help="directory relative media paths are resolved against (default: the data file's)")
  p.add_argument("--mode", choices=("conflict", "consistent"), help="MC2 context mode (default: each row's)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), help="cast the model's weights")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxalm.data import DataError
  from jaxalm.scorefile import ScoreFileError
  from jaxalm.studies.arbitration import check_branches, run_arbitration
  from jaxalm.studies.common import load_model
  try:
    if args.batch_size < 1:
      raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.dev_fraction <= 1.0:
      raise ValueError(f"--dev-fraction must be in [0, 1], got {args.dev_fraction}")
    if args.bootstrap < 0:
      raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.branches is not None:
      check_branches(args.branches)
    model = load_model(args.model, args.dtype)
    summary = run_arbitration(
        model, args.data, args.out, format=args.format, branches=args.branches, batch_size=args.batch_size,
        snr_db=args.snr_db, budget=args.budget, n_bootstrap=args.bootstrap, seed=args.seed,
        dev_fraction=args.dev_fraction, fine_grid=args.fine_grid, media_root=args.media_root, mode=args.mode,
        show_progress=not args.no_progress)
  except (DataError, ScoreFileError, ValueError, OSError) as e:
    print(f"jaxalm arbitration: error: {e}", file=sys.stderr)
    return 2
  for s in summary["skipped"]:
    print(f"skipped {s['id']}: {s['reason']}", file=sys.stderr)
  if "error" in summary:
    print(f"jaxalm arbitration: error: {summary['error']}", file=sys.stderr)
    return 1
  d = summary["diagnostics"]["joint"]
  c = summary["counts"]
  print(f"{c['n_items']} items ({c['n_adversarial']} adversarial, {c['n_faithful']} faithful lines), "
        f"{len(summary['skipped'])} skipped")
  print(f"joint: conflict {_pct(d['conflict_acc'])}, faithful {_pct(d['faithful_acc'])}, text-follow "
        f"{_pct(d['text_follow'])}, audio reference {_pct(d['audio_ref_acc'])}, "
        f"repairable {_pct(d['repairable_rate'])}")
  sel = summary["selection"]
  for m in ("gacl", "aad", "acd"):
    if m in sel:
      print(f"{m}@{args.budget:g}pp (test): conflict {_pct(sel[m]['conflict_acc'])}, "
            f"faithful {_pct(sel[m]['faithful_acc'])}")
  for m, v in summary["nauc"].get("methods", {}).items():
    print(f"{m}: " + ", ".join(f"{k} {_pct(x['value'])} [{_pct(x['ci'][0])}, {_pct(x['ci'][1])}]"
                               for k, x in v.items()))
  print(f"wrote {args.out}")
  return 0


def _pct(x) -> str:
  return "-" if x is None else f"{x:.1f}"
