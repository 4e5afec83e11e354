"""`jaxalm patch`: activation-patching localisation of arbitration reversals."""

from __future__ import annotations


def register(subparsers) -> None:
  p = subparsers.add_parser("patch", help="patch same-audio activations into the joint branch (site x layer x role)")
  p.add_argument("--model", required=True, help="jaxalm checkpoint directory")
  p.add_argument("--data", required=True, help="conflict benchmark file (MCR-Bench, ALME or MC2 format)")
  p.add_argument("--out", required=True, help="output directory (resumed if it has partial results)")
  p.add_argument("--format", default=None, help="benchmark format (default: inferred)")
  p.add_argument("--sites", nargs="+", default=None, help="decoder sites (default: all lm.* sites)")
  p.add_argument("--roles", nargs="+", default=None, help="position roles (default: audio instruction answer)")
  p.add_argument("--batch-size", type=int, default=2, help="items per compiled sweep")
  p.add_argument("--chunk", type=int, default=None, help="patches evaluated at once (bounds memory)")
  p.add_argument("--no-attribution", action="store_true", help="skip the attribution-patching estimate")
  p.add_argument("--max-items", type=int, default=None)
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxalm import patching
  from jaxalm.studies import patch
  res = patch.run(args.model, args.data, args.out, data_format=args.format,
                  sites=args.sites or patching.SITES, roles=args.roles or patching.PATCH_ROLES,
                  batch_size=args.batch_size, chunk=args.chunk, attribution=not args.no_attribution,
                  max_items=args.max_items, show_progress=not args.quiet)
  print(patch.site_table_markdown(res.get("site_table", [])))
  print(f"{res['n_items']} items; results in {args.out}")
  return 0
