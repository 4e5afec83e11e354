"""`jaxalm demo [--model DIR] [--data FILE] [--out DIR]`: the main job, one report.

Runs the arbitration, text-prior and patching studies (by default on the shipped organism
and a generated held-out benchmark) and writes OUT/summary.md, OUT/summary.json and the
plots; see `jaxalm.studies.demo`.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
  from jaxalm.studies.demo import DEFAULT_ITEMS
  p = subparsers.add_parser("demo", help="run the arbitration, text-prior and patching studies and write a report "
                                         "(default: the shipped organism on a generated benchmark)")
  p.add_argument("--model", help="jaxalm checkpoint directory (default: the shipped organism)")
  p.add_argument("--data", help="benchmark file (default: organism items generated with a held-out seed)")
  p.add_argument("--out", default="jaxalm-demo", help="output directory (default ./jaxalm-demo; a rerun with the "
                                                       "same settings resumes it)")
  p.add_argument("--items", type=int, help=f"items of the arbitration study (default {DEFAULT_ITEMS} generated, "
                                           "or all of --data); text prior and patching take half and a quarter")
  p.add_argument("--tp-items", type=int, help="items of the text-prior study (default: half of --items)")
  p.add_argument("--patch-items", type=int, help="conflict items of the patching study (default: a quarter of --items)")
  p.add_argument("--budget", type=float, default=5.0, help="faithful-drop budget in pp for the selection (default 5)")
  p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws of the confidence intervals "
                                                             "(default 1000)")
  p.add_argument("--batch-size", type=int, default=8, help="items per compiled call (default 8)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxalm.data import DataError
  from jaxalm.scorefile import ScoreFileError
  from jaxalm.studies.demo import SUMMARY_MD, headline_text, run_demo
  try:
    if args.batch_size < 1:
      raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.bootstrap < 0:
      raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    summary = run_demo(args.model, args.data, args.out, items=args.items, tp_items=args.tp_items,
                       patch_items=args.patch_items, budget=args.budget, n_bootstrap=args.bootstrap,
                       batch_size=args.batch_size, show_progress=not args.no_progress)
  except (DataError, ScoreFileError, ValueError, OSError) as e:
    print(f"jaxalm demo: error: {e}", file=sys.stderr)
    return 2
  print(headline_text(summary))
  print(f"report: {args.out}/{SUMMARY_MD} ({summary['wall_s']:.0f} s)")
  return 0
