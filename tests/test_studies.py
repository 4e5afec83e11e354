"""The study commands end to end on the tiny Qwen2-Audio model: files, skips, resume, metrics parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

import tiny_hf
from jaxalm import metrics
from jaxalm.cli import main
from jaxalm.studies.common import JsonlWriter, read_jsonl

SR = tiny_hf.SAMPLING_RATE
BOOT = 40


def _jsonl(path: Path, rows) -> Path:
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def _lines(path: Path) -> list[dict]:
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


@pytest.fixture(scope="module")
def bench(tiny, tmp_path_factory):
  """A model dir and small benchmark files in the mcr, alme, mc2 and mmau formats."""
  root = tmp_path_factory.mktemp("studies")
  for i in range(4):  # equal lengths: every batch has one shape, so one compile per study
    soundfile.write(root / f"clip{i}.wav", tiny_hf.make_audio(1.0, seed=i), SR)
  soundfile.write(root / "short.wav", tiny_hf.make_audio(0.3, seed=9), SR)
  (root / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n")
  (root / "corrupt.wav").write_bytes(b"RIFF0000WAVEjunk")
  ev = {"adversarial": "The caption says a dog barks.", "faithful": "The caption says no dog barks."}
  mcr = [{"id": f"aqa_{i}", "audio": f"clip{i}.wav", "question": "Does a dog bark?", "candidates": ["yes", "no"],
          "answer": ("no", "yes")[i % 2], "text_answer": ("yes", "no")[i % 2], "evidence": ev, "task": "aqa"}
         for i in range(4)]
  mcr.insert(2, {"id": "bad_answer", "audio": "clip0.wav", "question": "Does a dog bark?",
                 "candidates": ["yes", "no"], "answer": "maybe", "evidence": ev})
  mcr.insert(4, {"id": "corrupt_audio", "audio": "corrupt.wav", "question": "Does a dog bark?",
                 "candidates": ["yes", "no"], "answer": "no", "evidence": ev})
  mcr.append({"id": "no_audio_file", "audio": "missing.wav", "question": "Does a dog bark?",
              "candidates": ["yes", "no"], "answer": "no", "evidence": ev})
  alme = [{"id": f"alme_{i}", "audio": f"clip{i}.wav", "question": "Which word is spoken?",
           "option_a": "river", "option_b": "window", "answer": "AB"[i % 2],
           "claim": "The speaker says window.", "ref_text": "The speaker says river.",
           "split": ("dev", "test")[i // 2]} for i in range(4)]
  del alme[3]["ref_text"]  # adversarial only: batched with items that also have a faithful line
  mc2 = [{"idx": f"mc2_{i}", "image_path": "pic.png", "question": "What color is the car?",
          "answer_vision": "red", "answer_text": "blue", "context": "The car is blue.", "context_mode": "conflict"}
         for i in range(2)]
  mmau = [{"id": "mmau_0", "audio_id": "clip0.wav", "question": "What is heard?",
           "choices": ["speech", "music", "noise"], "answer": "music", "task": "sound"}]
  mmau.append({"id": "mmau_short", "audio_id": "short.wav", "question": "What is heard?",
               "choices": ["speech", "music", "noise"], "answer": "noise", "task": "sound"})
  mmau.append({"id": "mmau_bad", "audio_id": "clip0.wav", "question": "What is heard?", "choices": ["speech"],
               "answer": "speech"})
  return {"model": str(tiny.jx_dir("gqa")), "root": root, "mcr": _jsonl(root / "mcr.jsonl", mcr),
          "alme": _jsonl(root / "alme.jsonl", alme), "mc2": _jsonl(root / "mc2.jsonl", mc2),
          "mmau": _jsonl(root / "mmau.jsonl", mmau)}


def _arbitration(bench, data, out, *extra):
  return main(["arbitration", "--model", bench["model"], "--data", str(data), "--out", str(out), "--batch-size", "2",
               "--bootstrap", str(BOOT), "--no-progress", *extra])


@pytest.fixture(scope="module")
def mcr_run(bench):
  out = bench["root"] / "arb_mcr"
  assert _arbitration(bench, bench["mcr"], out) == 0
  return out


def test_arbitration_writes_every_file(mcr_run):
  for name in ("scores.jsonl", "summary.json", "margins.png", "frontier.png"):
    assert (mcr_run / name).stat().st_size > 0, name
  for name in ("margins.png", "frontier.png"):
    assert (mcr_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  lines = _lines(mcr_run / "scores.jsonl")
  assert sorted((l["id"], l["condition"]) for l in lines) == sorted(
      (f"aqa_{i}", c) for i in range(4) for c in ("adversarial", "faithful"))
  for l in lines:
    assert set(l["scores"]) == {"joint", "same_audio", "no_audio", "perturbed"}
    assert l["y_a"] == ("no", "yes")[int(l["id"][-1]) % 2]
    assert l["y_t"] == (l["y_a"] if l["condition"] == "faithful" else {"yes": "no", "no": "yes"}[l["y_a"]])
    assert all(np.isfinite(v).all() and max(v) < 0 for v in l["scores"].values())
  by = {(l["id"], l["condition"]): l["scores"] for l in lines}
  for i in range(4):  # the two lines share the evidence-free branches, differ in the evidence ones
    adv, fai = by[(f"aqa_{i}", "adversarial")], by[(f"aqa_{i}", "faithful")]
    assert adv["same_audio"] == fai["same_audio"] and adv["no_audio"] == fai["no_audio"]
    assert adv["joint"] != fai["joint"] and adv["perturbed"] != fai["perturbed"] and adv["joint"] != adv["perturbed"]
  splits = {l["id"]: l["split"] for l in lines}
  assert sorted(splits.values()) == ["dev", "dev", "test", "test"]  # seeded, dev fraction 0.5


def test_malformed_rows_are_skipped_and_listed(mcr_run):
  skipped = {s["id"]: s["reason"] for s in json.loads((mcr_run / "summary.json").read_text())["skipped"]}
  assert set(skipped) == {"bad_answer", "corrupt_audio", "no_audio_file"}
  assert "'maybe' is not among candidates" in skipped["bad_answer"]
  assert "cannot read audio file" in skipped["corrupt_audio"]
  assert "media file not found" in skipped["no_audio_file"]


def test_summary_numbers(mcr_run, capsys):
  summary = json.loads((mcr_run / "summary.json").read_text())
  lines = _lines(mcr_run / "scores.jsonl")
  adv = [l for l in lines if l["condition"] == "adversarial"]
  fai = [l for l in lines if l["condition"] == "faithful"]
  pick = lambda l, b: l["candidates"][int(np.argmax(l["scores"][b]))]
  j = summary["diagnostics"]["joint"]
  assert j["conflict_acc"] == pytest.approx(100 * np.mean([pick(l, "joint") == l["y_a"] for l in adv]), abs=1e-6)
  assert j["text_follow"] == pytest.approx(100 * np.mean([pick(l, "joint") == l["y_t"] for l in adv]), abs=1e-6)
  assert j["faithful_acc"] == pytest.approx(100 * np.mean([pick(l, "joint") == l["y_a"] for l in fai]), abs=1e-6)
  m = lambda l, b: l["scores"][b][l["candidates"].index(l["y_a"])] - l["scores"][b][l["candidates"].index(l["y_t"])]
  rep = [m(l, "same_audio") > 0 and m(l, "joint") < 0 for l in adv]
  assert j["repairable_rate"] == pytest.approx(100 * np.mean(rep), abs=1e-6)
  assert set(j["gate_proxy"]) == {"R_A", "N_out", "R_A*N_out"}

  scores = str(mcr_run / "scores.jsonl")
  capsys.readouterr()
  assert main(["metrics", scores, "--method", "all", "--json", "--bootstrap", str(BOOT)]) == 0
  assert json.loads(capsys.readouterr().out) == summary["diagnostics"]
  assert main(["metrics", scores, "--method", "all", "--json", "--bootstrap", str(BOOT), "--select",
               "--budget", "5"]) == 0
  selection = json.loads(capsys.readouterr().out)
  assert selection == summary["selection"]
  assert {"gacl", "aad", "acd"} <= set(selection) and selection["split"]["n_test"] == 4

  from jaxalm import correction
  from jaxalm.scorefile import read_scorefile, to_arrays
  arrays = to_arrays(read_scorefile(scores))
  test = arrays.subset(arrays.extra["split"] == "test")
  nauc = summary["nauc"]
  assert nauc["population"] == "test" and nauc["n_lines"] == 4
  for method in ("gacl", "aad", "acd"):
    points = correction.sweep(method, test.branches, test.y_a, test.adversarial, test.mask, fine=True)
    for b in (5, 10):
      got = nauc["methods"][method][f"nauc@0-{b}"]
      assert got["value"] == pytest.approx(metrics.nauc(points, b), abs=1e-9)
      assert 0 <= got["ci"][0] <= got["ci"][1] <= 100


def test_resume_after_a_kill(bench, mcr_run):
  whole = (mcr_run / "scores.jsonl").read_bytes()
  cut = [i for i, c in enumerate(whole) if c == ord("\n")][4] + 40  # 5 lines and a torn 6th
  out = bench["root"] / "arb_resume"
  out.mkdir()
  (out / "scores.jsonl").write_bytes(whole[:cut])
  assert _arbitration(bench, bench["mcr"], out) == 0
  resumed = _lines(out / "scores.jsonl")
  keys = [(l["id"], l["condition"]) for l in resumed]
  assert len(keys) == len(set(keys)) == 8
  first = {(l["id"], l["condition"]): l for l in _lines(mcr_run / "scores.jsonl")}
  assert dict(zip(keys, resumed)) == first  # same scores, bit for bit
  s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (mcr_run, out))
  assert s2["n_items_scored_this_run"] == 2
  for key in ("diagnostics", "selection", "nauc", "frontier", "counts", "skipped"):
    if key in ("diagnostics", "selection"):
      s1[key].pop("scores"), s2[key].pop("scores")
    assert s1[key] == s2[key], key
  assert _arbitration(bench, bench["mcr"], out) == 0  # nothing left to score
  assert json.loads((out / "summary.json").read_text())["n_items_scored_this_run"] == 0
  assert (out / "scores.jsonl").read_bytes() == whole


def test_resuming_another_models_scores_is_refused(bench, mcr_run, capsys):
  out = bench["root"] / "arb_other"
  out.mkdir()
  line = _lines(mcr_run / "scores.jsonl")[0]
  _jsonl(out / "scores.jsonl", [{**line, "model": "another-model"}])
  assert _arbitration(bench, bench["mcr"], out) == 2
  assert "holds scores of model(s) ['another-model']" in capsys.readouterr().err
  assert _lines(out / "scores.jsonl") == [{**line, "model": "another-model"}]


def test_alme_uses_item_splits_and_letters(bench):
  out = bench["root"] / "arb_alme"
  branches = "joint,faithful,same_audio,no_audio"
  assert _arbitration(bench, bench["alme"], out, "--batch-size", "4", "--branches", branches) == 0
  lines = _lines(out / "scores.jsonl")
  assert sorted((l["id"], l["condition"]) for l in lines) == sorted(
      [(f"alme_{i}", "adversarial") for i in range(4)] + [(f"alme_{i}", "faithful") for i in range(3)])
  for l in lines:
    assert l["candidates"] == ["A", "B"] and set(l["scores"]) == {"joint", "same_audio", "no_audio"}
    assert l["split"] == ("dev", "test")[int(l["id"][-1]) // 2]
  summary = json.loads((out / "summary.json").read_text())
  assert "acd" not in summary["selection"] and "aad" in summary["selection"]
  assert summary["selection"]["split"] == {"field": "split", "dev": "dev", "test": "test", "n_dev": 4, "n_test": 3}
  for name in ("margins.png", "frontier.png"):
    assert (out / name).stat().st_size > 0


def test_vision_items_with_an_audio_model_are_skipped(bench, capsys):
  out = bench["root"] / "arb_mc2"
  assert _arbitration(bench, bench["mc2"], out, "--format", "mc2") == 1
  summary = json.loads((out / "summary.json").read_text())
  assert [s["id"] for s in summary["skipped"]] == ["mc2_0", "mc2_1"]
  assert all("image item" in s["reason"] for s in summary["skipped"])
  assert (out / "scores.jsonl").read_bytes() == b""
  assert "no item could be scored" in capsys.readouterr().err


def test_text_prior(bench):
  out = bench["root"] / "tp"
  assert main(["text-prior", "--model", bench["model"], "--data", str(bench["mmau"]), "--out", str(out),
               "--batch-size", "2", "--no-progress"]) == 0
  for name in ("results.jsonl", "summary.json", "decomposition.png", "retention.png"):
    assert (out / name).stat().st_size > 0, name
  recs = {r["id"]: r for r in _lines(out / "results.jsonl")}
  assert set(recs) == {"mmau_0", "mmau_short"}
  frags = [f"frag{n}_{k}" for n in (2, 3, 4, 5) for k in range(1, n + 1)]
  for rid, r in recs.items():
    short = rid == "mmau_short"
    assert r["too_short"] is short
    assert set(r["scores"]) == {"same_audio", "no_audio", *([] if short else frags)}
    for b, s in r["scores"].items():
      assert r["correct"][b] == (r["candidates"][int(np.argmax(s))] == r["answer"])
  # 0.3 s splits into 2 and 3 chunks but not 5: scored without fragments, and the item's category follows.
  full = np.array([recs[i]["correct"]["same_audio"] for i in sorted(recs)])
  none = np.array([recs[i]["correct"]["no_audio"] for i in sorted(recs)])
  fr = {n: np.array([[recs[i]["correct"].get(f"frag{n}_{k}", False) for k in range(1, n + 1)] for i in sorted(recs)])
        for n in (2, 3, 4, 5)}
  short = np.array([i == "mmau_short" for i in sorted(recs)])
  cats = metrics.tp_categories(full, none, fr, short)
  assert [recs[i]["category"] for i in sorted(recs)] == cats.tolist()
  summary = json.loads((out / "summary.json").read_text())
  assert summary["n_items"] == 2 and summary["n_too_short_audio"] == 1
  assert [s["id"] for s in summary["skipped"]] == ["mmau_bad"]
  assert summary["accuracy"]["full"] == pytest.approx(100 * full.mean())
  r_tp = metrics.text_prior_rate(full, none)
  assert summary["R_TP"] == (None if np.isnan(r_tp) else pytest.approx(r_tp))
  ret = metrics.retention(full, fr, short)
  assert {int(n): v for n, v in summary["R_N"].items()} == {
      n: (None if np.isnan(v) else pytest.approx(v)) for n, v in ret.items()}
  dec = metrics.tp_decomposition(cats)
  assert {c: v["n"] for c, v in summary["decomposition"].items()} == {c: v["n"] for c, v in dec.items()}
  assert sum(v["n"] for v in summary["decomposition"].values()) == 2

  # Resume: a complete file is not rescored; a torn tail is dropped on reopening.
  assert main(["text-prior", "--model", bench["model"], "--data", str(bench["mmau"]), "--out", str(out),
               "--no-progress"]) == 0
  again = json.loads((out / "summary.json").read_text())
  assert again["n_items_scored_this_run"] == 0 and again["decomposition"] == summary["decomposition"]


def test_jsonl_writer_resumes(tmp_path):
  path = tmp_path / "r.jsonl"
  with JsonlWriter(path) as w:
    w.write({"id": "a", "x": 1})
    w.write({"id": "b", "x": 2})
    with pytest.raises(ValueError, match="duplicate id 'a'"):
      w.write({"id": "a", "x": 3})
  data = path.read_bytes()
  path.write_bytes(data + b'{"id": "c", "x"')  # killed mid-write
  assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
  with JsonlWriter(path) as w:
    assert set(w.records) == {"a", "b"}
    assert path.read_bytes() == data
    w.write({"id": "c", "x": 3})
  assert [r["x"] for r in read_jsonl(path)] == [1, 2, 3]
  path.write_bytes(data.replace(b'"b"', b"b"))
  with pytest.raises(ValueError, match=":2: not valid JSON"):
    JsonlWriter(path)
