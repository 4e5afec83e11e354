"""`jaxalm text-prior --model DIR --data FILE --out DIR`: the [TP] text-prior study.

Writes OUT/results.jsonl (per item, as it goes; a rerun resumes it), OUT/summary.json
(R_TP, R_N, the TS/FS/XS/AH/UN/too_short decomposition, XS / (FS + XS)),
OUT/decomposition.png and OUT/retention.png.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
  p = subparsers.add_parser("text-prior", help="text prior and audio reliance: Full, None and fragment runs")
  p.add_argument("--model", required=True, help="converted jaxalm checkpoint directory")
  p.add_argument("--data", required=True, help="benchmark file (.jsonl, .json or .csv)")
  p.add_argument("--out", required=True, help="output directory (created; an existing results.jsonl is resumed)")
  p.add_argument("--format", choices=("mcr", "alme", "mmau", "mc2"), help="benchmark format (default: inferred)")
  p.add_argument("--batch-size", type=int, default=4, help="items per compiled call (default 4)")
  p.add_argument("--media-root", help="directory relative media paths are resolved against (default: the data file's)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), help="cast the model's weights")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxalm.data import DataError
  from jaxalm.studies.common import load_model
  from jaxalm.studies.text_prior import run_text_prior
  try:
    if args.batch_size < 1:
      raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    model = load_model(args.model, args.dtype)
    summary = run_text_prior(model, args.data, args.out, format=args.format, batch_size=args.batch_size,
                             media_root=args.media_root, show_progress=not args.no_progress)
  except (DataError, ValueError, OSError) as e:
    print(f"jaxalm text-prior: error: {e}", file=sys.stderr)
    return 2
  for s in summary["skipped"]:
    print(f"skipped {s['id']}: {s['reason']}", file=sys.stderr)
  if "error" in summary:
    print(f"jaxalm text-prior: error: {summary['error']}", file=sys.stderr)
    return 1
  d = summary["decomposition"]
  print(f"{summary['n_items']} items ({summary['n_too_short_audio']} too short to split), "
        f"{len(summary['skipped'])} skipped")
  print(f"R_TP {_pct(summary['R_TP'])}; " + ", ".join(f"R_{n} {_pct(v)}" for n, v in summary["R_N"].items()))
  print(", ".join(f"{c} {_pct(v['share'])}" for c, v in d.items()) + f"; XS/(FS+XS) {_pct(summary['XS_over_FS_XS'])}")
  print(f"wrote {args.out}")
  return 0


def _pct(x) -> str:
  return "-" if x is None else f"{x:.1f}"
