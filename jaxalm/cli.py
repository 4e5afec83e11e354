"""jaxalm: convert, score, diagnose, patch and correct audio-language models.

Each subcommand lives in `jaxalm/commands/<name>.py` and exposes
`register(subparsers)`, which adds its parser and sets `func` (called with the parsed args,
returning an exit code)."""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("convert", "metrics", "arbitration", "text_prior", "patch", "demo")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxalm", description=__doc__.split("\n")[0])
  subparsers = parser.add_subparsers(dest="command", required=True)
  for name in SUBCOMMANDS:
    try:
      module = importlib.import_module(f"jaxalm.commands.{name}")
    except ModuleNotFoundError as e:
      if e.name == f"jaxalm.commands.{name}":
        continue  # not built yet
      raise
    module.register(subparsers)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  return int(args.func(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
