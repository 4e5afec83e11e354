"""`jaxalm demo` on the shipped organism: one small in-process run, its report, and the
reversal, its correction and its localisation checked against an independent rescoring."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxalm
from jaxalm import cli, correction, metrics, organism_tasks
from jaxalm.studies import demo as demo_study

ORGANISM = Path(jaxalm.__file__).parent / "assets" / "organism"
ITEMS = 32  # arbitration 32 (16 dev / 16 test), text prior 16, patching 8
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  """(OUT, summary) of `jaxalm demo --items 32` run once through the CLI entry point."""
  assert (ORGANISM / "jaxalm.json").is_file(), f"the shipped organism is missing from {ORGANISM}"
  out = tmp_path_factory.mktemp("demo") / "out"
  rc = cli.main(["demo", "--out", str(out), "--items", str(ITEMS), "--bootstrap", "200", "--no-progress"])
  assert rc == 0
  return out, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def rescored(demo):
  """The demo's benchmark scored again by `jaxalm.branches.Scorer` (J, F, A), as ScoreArrays
  with the dev/test split the arbitration study assigns; and {id: (M_J, M_A)}."""
  from jaxalm.branches import Scorer
  from jaxalm.data import read_items
  from jaxalm.scorefile import item_from_dict, to_arrays
  from jaxalm.studies.arbitration import split_by_id
  from jaxalm.studies.common import load_model

  out, _ = demo
  items = read_items(out / "benchmark" / "organism.jsonl").items
  assert [it.id for it in items] == [it.id for it in organism_tasks.generate(ITEMS, demo_study.HELD_OUT_SEED)]
  assert all(it.split is None for it in items)
  split = split_by_id(items, seed=0)
  scorer = Scorer(load_model(ORGANISM), ("joint", "faithful", "same_audio"), batch_size=8)
  lines, margins = [], {}
  for it, s in scorer.score(items):
    for cond, joint, y_t in (("adversarial", "joint", it.text_answer), ("faithful", "faithful", it.answer)):
      lines.append(item_from_dict({
          "id": it.id, "condition": cond, "candidates": list(it.candidates), "y_a": it.answer, "y_t": y_t,
          "scores": {"joint": s[joint].tolist(), "same_audio": s["same_audio"].tolist()}, "split": split[it.id]}))
    ya, yt = it.candidates.index(it.answer), it.candidates.index(it.text_answer)
    margins[it.id] = (s["joint"][ya] - s["joint"][yt], s["same_audio"][ya] - s["same_audio"][yt])
  return to_arrays(lines), margins


def test_demo_report(demo):
  """(c) The run writes the report, the plots it links, and the studies' own outputs."""
  out, s = demo
  for f in ("summary.md", "summary.json", "config.json", "arbitration/scores.jsonl", "text_prior/results.jsonl",
            "patching/patch_items.jsonl", "patching/site_table.md"):
    assert (out / f).is_file(), f
  pngs = [v for v in s["files"].values() if v.endswith(".png")]
  assert {"headline.png", "arbitration/margins.png", "arbitration/frontier.png", "text_prior/decomposition.png",
          "text_prior/retention.png", "patching/rescue_heatmap.png", "patching/rho_by_depth.png",
          "patching/displacement_scatter.png"} <= set(pngs)
  md = (out / "summary.md").read_text()
  for p in pngs:
    assert (out / p).read_bytes()[:8] == PNG, p
    assert f"]({p})" in md, p

  # The headline repeats the studies' own summaries.
  arb = json.loads((out / "arbitration" / "summary.json").read_text())
  tp = json.loads((out / "text_prior" / "summary.json").read_text())
  h = s["headline"]
  assert h["conflict_acc"] == arb["diagnostics"]["joint"]["conflict_acc"]
  assert h["same_audio_acc"] == arb["diagnostics"]["joint"]["audio_ref_acc"]
  assert h["gacl"]["params"] == arb["selection"]["gacl"]["params"]
  assert h["nauc"]["gacl"]["nauc@0-5"] == arb["nauc"]["methods"]["gacl"]["nauc@0-5"]["value"]
  assert h["R_TP"] == tp["R_TP"]
  assert arb["counts"] == {"n_lines": 2 * ITEMS, "n_items": ITEMS, "n_adversarial": ITEMS, "n_faithful": ITEMS,
                           "n_dev_lines": ITEMS, "n_test_lines": ITEMS}
  assert tp["n_items"] == ITEMS // 2 and s["patching"]["n_items"] == ITEMS // 4
  for figure in (f"{h['conflict_acc']:.1f}", f"{h['repairable_rate']:.1f}", f"+{h['gacl']['conflict_gain']:.1f} pp",
                 f"R_TP {h['R_TP']:.1f}", h["patch_top"]["site"]):
    assert figure in md, figure
  assert set(s["arbitration"]["by_task"]) == {"all", *organism_tasks.TASKS}

  # Fragments of the 1-2 s clips (0.2-1 s) all score: no item is too short for N = 5.
  assert tp["n_too_short_audio"] == 0 and not tp["skipped"]
  assert tp["accuracy"]["full"] > tp["accuracy"]["none"]

  # Another item count in the same directory is refused rather than mixed in.
  assert cli.main(["demo", "--out", str(out), "--items", str(ITEMS + 8), "--no-progress"]) == 2


def test_gacl_repairs_the_reversal(demo, rescored):
  """(a) The organism follows the adversarial text; GACL selected on dev within 5 pp of faithful
  drop raises test conflict accuracy by >= 20 pp (recomputed here from a fresh scoring)."""
  arrays, _ = rescored
  split = arrays.extra["split"]
  dev, test = arrays.subset(split == "dev"), arrays.subset(split == "test")
  assert dev.adversarial.sum() == test.adversarial.sum() == ITEMS // 2
  joint_conflict = metrics.conflict_accuracy(test.branches["joint"], test.y_a, test.adversarial, test.mask)
  m_a = metrics.margins(arrays.branches["same_audio"], arrays.y_a, arrays.y_t)[arrays.adversarial]
  m_j = metrics.margins(arrays.branches["joint"], arrays.y_a, arrays.y_t)[arrays.adversarial]
  assert joint_conflict <= 20.0
  assert metrics.repairable_rate(m_a, m_j) >= 70.0
  with jax.enable_x64(True):
    dev_pt, test_pt = correction.select_and_report("gacl", dev, test, budget_pp=5.0)
  assert dev_pt is not None and dev_pt.faithful_drop <= 5.0
  assert test_pt.conflict_gain >= 20.0, test_pt
  assert test_pt.conflict_acc == pytest.approx(joint_conflict + test_pt.conflict_gain)

  # The demo, scoring more branches in other batches, reports the same selection.
  g = demo[1]["headline"]["gacl"]
  assert g["params"] == pytest.approx(dict(dev_pt.params))
  assert g["conflict_gain"] == pytest.approx(test_pt.conflict_gain)
  assert g["faithful_drop"] == pytest.approx(test_pt.faithful_drop)


def test_patching_localises_to_answer_side(demo, rescored):
  """(b) Patching A into J rescues repairable items at the answer-side positions only."""
  out, s = demo
  p = s["patching"]
  assert p["n_repairable"] >= p["n_items"] // 2
  rows = p["site_table"]
  best = lambda role: max(r["peak_rescue"] for r in rows if r["role"] == role)
  assert s["headline"]["patch_top"]["role"] == "answer"
  assert best("answer") > max(best("audio"), best("instruction"))
  # The audio span precedes the evidence, so it is the same in J and A: patching it is a no-op.
  assert best("audio") == 0.0
  # With single-token labels, the final residual at the answer positions decides: rescue is total.
  last = next(r for r in rows if r["site"] == "lm.resid_post" and r["role"] == "answer")
  assert last["peak_rescue"] == 1.0 and last["peak_layer"] == p["n_layers"] - 1

  # The patching study's clean margins agree with the independent scoring.
  _, margins = rescored
  recs = [json.loads(line) for line in (out / "patching" / "patch_items.jsonl").read_text().splitlines()]
  assert len(recs) == ITEMS // 4
  for r in recs:
    np.testing.assert_allclose([r["m_joint"], r["m_audio"]], margins[r["id"]], atol=1e-3)
