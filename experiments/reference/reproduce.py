"""Recomputes the [ARB] figures that the published per-sample data determine.

  python experiments/reference/reproduce.py [--ref DIR]

Prints: the repairable-quadrant rate per model x task from `margin_rows_r005.jsonl`
(with per-task macro, pooled rate and text-follow), nAUC@0-5 / @0-10 of the published
macro frontier (`fig5_frontier_bootstrap.csv`), and the candidate-level MC2 transfer
(joint / GACL / gate) through `jaxalm metrics`. tests/test_metrics.py and
tests/test_cli_metrics.py check the same figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jaxalm import metrics  # noqa: E402
from jaxalm.cli import main as jaxalm_main  # noqa: E402
from mc2_to_scorefile import REF_DIR, convert  # noqa: E402

TASKS = ("AQA", "VSC", "SER", "ALME")


def repairable_table(ref: Path) -> None:
  rows = [json.loads(l) for l in (ref / "margin_rows_r005.jsonl").read_text().splitlines() if l.strip()]
  flags = metrics.repairable([r["M_A"] for r in rows], [r["M_J"] for r in rows])
  cells = metrics.rate_by_group(flags, [(r["model"], r["task"].removeprefix("MCR-")) for r in rows])
  follow = metrics.rate_by_group([r["text_follow"] for r in rows], [r["task"].removeprefix("MCR-") for r in rows])
  models = list(dict.fromkeys(r["model"] for r in rows))
  print(f"repairable quadrant (% of conflict items), {len(rows)} items")
  print(f"{'model':<14}" + "".join(f"{t:>7}" for t in TASKS))
  for m in models:
    print(f"{m:<14}" + "".join(f"{cells[(m, t)]:>7.1f}" for t in TASKS))
  print(f"{'macro':<14}" + "".join(f"{metrics.macro([cells[(m, t)] for m in models]):>7.1f}" for t in TASKS))
  print(f"{'text-follow':<14}" + "".join(f"{follow[t]:>7.1f}" for t in TASKS))
  print(f"pooled {metrics.percent(flags):.1f}\n")


def nauc_table(ref: Path) -> None:
  rows = list(csv.DictReader((ref / "fig5_frontier_bootstrap.csv").open()))
  print("nAUC of the published macro frontier   @0-5   @0-10")
  for method in dict.fromkeys(r["method"] for r in rows):
    mine = [r for r in rows if r["method"] == method]
    k = [float(r["K_pp"]) for r in mine]
    g = [float(r["best_conflict_gain_pp"]) for r in mine]
    print(f"{method:<37}{metrics.nauc_curve(k, g, 5):>6.2f}{metrics.nauc_curve(k, g, 10):>8.2f}")
  print()


def mc2(ref: Path) -> None:
  with tempfile.TemporaryDirectory() as tmp:
    path = convert(Path(tmp) / "mc2.jsonl", ref)
    print("Qwen3-VL-2B on MC2, candidate level (adversarial = conflict split, faithful = consistent split)")
    jaxalm_main(["metrics", str(path)])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ref", default=str(REF_DIR))
  ref = Path(p.parse_args(argv).ref)
  repairable_table(ref)
  nauc_table(ref)
  mc2(ref)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
