"""Converts the published Qwen3-VL-2B MC2 per-sample scores into a jaxalm score file.

  python experiments/reference/mc2_to_scorefile.py OUT.jsonl [--ref DIR]
  jaxalm metrics OUT.jsonl

Each source line holds, per branch, the whole-label scores of the two MC2 labels
(`scores.vision` for `answer_vision`, `scores.text` for `answer_text`). Branches:
`joint` (image + question + text context) -> `joint`; `vision` (image + question, the
same-image reference) -> `same_audio`; `text` (text-only) -> `text_only`. The conflict
split becomes `adversarial` items (y_t = answer_text), the consistent split (the text
supports the vision answer) `faithful` items (y_t = y_a = answer_vision); the two splits
share item ids.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxalm.scorefile import ScoreItem, write_scorefile

REF_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "gacl"
BRANCHES = {"joint": "joint", "vision": "same_audio", "text": "text_only"}
SPLITS = {"qwen3vl2b_conflict.jsonl": "adversarial", "qwen3vl2b_consistent.jsonl": "faithful"}


def mc2_items(path: str | Path, condition: str) -> list[ScoreItem]:
  """Score items from one published MC2 file (`condition`: adversarial or faithful)."""
  items = []
  for line in Path(path).read_text().splitlines():
    if not line.strip():
      continue
    r = json.loads(line)
    y_a, text_answer = r["answer_vision"], r["answer_text"]
    scores = {dst: [r[src]["scores"]["vision"], r[src]["scores"]["text"]] for src, dst in BRANCHES.items()}
    items.append(ScoreItem(
      id=f"mc2_{int(r['idx']):04d}", condition=condition, candidates=(y_a, text_answer), y_a=y_a,
      y_t=text_answer if condition == "adversarial" else y_a, scores=scores,
      extra={"task": r["task"], "model": "Qwen3-VL-2B", "image_id": r["image_id"],
             "context_mode": r["context_mode"]}))
  return items


def convert(out: str | Path, ref_dir: str | Path = REF_DIR) -> Path:
  """Writes both MC2 splits of `ref_dir` into one score file at `out`."""
  items = []
  for name, condition in SPLITS.items():
    items += mc2_items(Path(ref_dir) / name, condition)
  return write_scorefile(out, items)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("out")
  p.add_argument("--ref", default=str(REF_DIR), help="folder with the published qwen3vl2b_*.jsonl")
  args = p.parse_args(argv)
  print(f"wrote {convert(args.out, args.ref)}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
