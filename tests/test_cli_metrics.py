"""`jaxalm metrics`: published MC2 figures, selection under budget, errors, subprocess."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxalm import cli, scorefile

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "reference" / "gacl"
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason=f"published [ARB] data not found at {REF}")


def _converter():
  spec = importlib.util.spec_from_file_location("mc2_to_scorefile", ROOT / "experiments/reference/mc2_to_scorefile.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _run(capsys, *argv) -> dict:
  assert cli.main(["metrics", *map(str, argv), "--json"]) == 0
  out = capsys.readouterr().out
  assert out.count("\n") == 1   # one JSON object
  return json.loads(out)


@pytest.fixture(scope="module")
def mc2(tmp_path_factory):
  if not REF.is_dir():
    pytest.skip(f"published [ARB] data not found at {REF}")
  return _converter().convert(tmp_path_factory.mktemp("mc2") / "mc2.jsonl", REF)


@needs_ref
def test_mc2_published_figures(mc2, capsys):
  items = scorefile.read_scorefile(mc2)
  assert len(items) == 400 and {it.condition for it in items} == {"adversarial", "faithful"}
  r = _run(capsys, mc2)
  # Conflict split: joint vision-follow 42.0, GACL (0.5, 0.5) 82.5, gate on 57.5%.
  # Consistent split (faithful items): joint 100.0, GACL 100.0, gate on 0.5%.
  assert r["joint"]["conflict_acc"] == pytest.approx(42.0)
  assert r["joint"]["faithful_acc"] == pytest.approx(100.0)
  assert r["gacl"]["params"] == {"lam": 0.5, "tau": 0.5, "alpha_max": 1.0}
  assert r["gacl"]["conflict_acc"] == pytest.approx(82.5)
  assert r["gacl"]["faithful_acc"] == pytest.approx(100.0)
  assert r["gacl"]["gate_rate"] == pytest.approx(57.5)
  assert r["gacl"]["faithful_gate_rate"] == pytest.approx(0.5)
  assert r["joint"]["text_follow"] == pytest.approx(58.0)   # two labels: 100 - 42
  for key in ("repairable_rate", "audio_ref_acc"):
    assert 0 <= r["joint"][key] <= 100


@needs_ref
def test_mc2_conflict_only_and_table(mc2, tmp_path, capsys):
  conflict = tmp_path / "conflict.jsonl"
  scorefile.write_scorefile(conflict, [it for it in scorefile.read_scorefile(mc2) if it.condition == "adversarial"])
  r = _run(capsys, conflict, "--lambda", "0.5", "--tau", "0.5")
  assert r["joint"]["faithful_acc"] is None and r["gacl"]["faithful_acc"] is None
  assert r["gacl"]["conflict_acc"] == pytest.approx(82.5)
  assert cli.main(["metrics", str(mc2)]) == 0
  table = capsys.readouterr().out
  assert "gacl" in table and "82.5" in table and "57.5" in table


def _toy_items():
  """AAD selection toy, 2 candidates ["a", "t"], y_a = "a". Margins M = s(a) - s(t).

  AAD gives (1 + alpha) M_J - alpha M_N; per group, from the alpha grid
  (0.25, 0.5, 0.75, 1, 1.5, 2, 3):
    A1 adversarial, M_J -1, M_N -3.5: right iff alpha > 0.4
    A2 adversarial, M_J -1, M_N -1.6: right iff alpha > 5/3
    A0 adversarial, M_J -5, M_N -5:   never right
    F1 faithful,    M_J  1, M_N  2.5: wrong iff alpha > 2/3
    F2 faithful,    M_J  1, M_N  1.6: wrong iff alpha > 5/3
    F0 faithful,    M_J  1, M_N  0:   always right
  dev: A1 x4, A2 x4, A0 x2; F1, F2, F0 x18 -> alpha 0.5: gain 40, drop 0;
       0.75-1.5: gain 40, drop 5; 2-3: gain 80, drop 10.
  test: A1 x2, A2 x1, A0 x7; F1, F2, F0 x8.
  The same-audio reference is right except on F1 and F2, so the hard switch drops
  2 of 20 faithful dev items (10 pp).
  """
  groups = {"A1": (-1, -3.5), "A2": (-1, -1.6), "A0": (-5, -5), "F1": (1, 2.5), "F2": (1, 1.6), "F0": (1, 0)}
  counts = {"dev": {"A1": 4, "A2": 4, "A0": 2, "F1": 1, "F2": 1, "F0": 18},
            "test": {"A1": 2, "A2": 1, "A0": 7, "F1": 1, "F2": 1, "F0": 8}}
  same_audio = {False: [-0.5, -1.0], True: [-1.0, -0.5]}   # the reference is wrong on F1, F2
  items = []
  for split, per in counts.items():
    for g, n in per.items():
      m_j, m_n = groups[g]
      for k in range(n):
        adv = g.startswith("A")
        items.append({"id": f"{split}-{g}-{k}", "condition": "adversarial" if adv else "faithful",
                      "candidates": ["a", "t"], "y_a": "a", "y_t": "t" if adv else "a", "split": split,
                      "scores": {"joint": [m_j - 4.0, -4.0], "same_audio": same_audio[g in ("F1", "F2")],
                                 "no_audio": [m_n - 2.0, -2.0]}})
  return items


def test_select_on_dev_report_on_test(tmp_path, capsys):
  path = scorefile.write_scorefile(tmp_path / "toy.jsonl", _toy_items())
  r = _run(capsys, path, "--method", "aad", "--select", "--budget", "5")
  assert r["split"]["n_dev"] == 30 and r["split"]["n_test"] == 20
  assert r["aad"]["params"] == {"alpha": 0.5}
  sel = r["aad"]["selection"]
  assert (sel["dev_conflict_gain"], sel["dev_faithful_drop"]) == (pytest.approx(40.0), pytest.approx(0.0))
  # test at alpha 0.5: A1 right (2/10), F all right.
  assert r["joint"]["conflict_acc"] == 0.0 and r["joint"]["faithful_acc"] == 100.0
  assert r["aad"]["conflict_acc"] == pytest.approx(20.0) and r["aad"]["faithful_acc"] == pytest.approx(100.0)
  # budget 10 pp: alpha 2 (first of the 80-gain points); test: A1 + A2 right, F1 + F2 wrong.
  r = _run(capsys, path, "--method", "aad", "--select", "--budget", "10")
  assert r["aad"]["params"] == {"alpha": 2.0}
  assert r["aad"]["conflict_acc"] == pytest.approx(30.0) and r["aad"]["faithful_acc"] == pytest.approx(80.0)
  # hard switch: its one point (drop 10) is over a 5 pp budget, nothing selected.
  r = _run(capsys, path, "--method", "hard_switch", "--select", "--budget", "5")
  assert r["hard_switch"]["params"] is None and r["hard_switch"]["selection"]["feasible"] is False


def test_fixed_params_and_all_methods(tmp_path, capsys):
  path = scorefile.write_scorefile(tmp_path / "toy.jsonl", _toy_items())
  r = _run(capsys, path, "--method", "aad", "--alpha", "3")
  # all 50 items: A1 6 + A2 5 of 20 adversarial right; F1 2 + F2 2 of 30 faithful wrong.
  assert r["aad"]["conflict_acc"] == pytest.approx(55.0)
  assert r["aad"]["faithful_acc"] == pytest.approx(100 * 26 / 30)
  r = _run(capsys, path, "--method", "all")
  assert {"joint", "gacl", "aad", "hard_switch", "naive"} <= set(r) and "acd" not in r


def test_errors(tmp_path, capsys):
  path = scorefile.write_scorefile(tmp_path / "toy.jsonl", _toy_items())
  assert cli.main(["metrics", str(path), "--method", "acd"]) == 2
  assert "'perturbed' branch" in capsys.readouterr().err
  assert cli.main(["metrics", str(path), "--method", "aad", "--lambda", "1"]) == 2
  assert "--lambda does not apply" in capsys.readouterr().err
  assert cli.main(["metrics", str(path), "--select", "--split-field", "fold"]) == 2
  assert "'fold' field" in capsys.readouterr().err
  bad = tmp_path / "bad.jsonl"
  bad.write_text(path.read_text().replace('"y_a": "a"', '"y_a": "b"', 1))
  assert cli.main(["metrics", str(bad)]) == 2
  assert "bad.jsonl:1 (id 'dev-A1-0')" in capsys.readouterr().err


def test_subprocess(tmp_path):
  exe = Path(sys.executable).parent / "jaxalm"
  assert exe.exists(), f"console script not installed at {exe}"
  path = scorefile.write_scorefile(tmp_path / "toy.jsonl", _toy_items())
  out = subprocess.run([str(exe), "metrics", str(path), "--method", "aad", "--alpha", "0.5", "--json"],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  r = json.loads(out.stdout)
  # all items at alpha 0.5: A1 (6 of 20) right; every faithful item right.
  assert r["aad"]["conflict_acc"] == pytest.approx(30.0) and r["aad"]["faithful_acc"] == pytest.approx(100.0)
  assert r["joint"]["conflict_acc"] == 0.0
