"""`jaxalm patch` end to end on a tiny converted model: outputs, resume."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

import tiny_hf
from jaxalm import cli, patching


def write_benchmark(root, n=3):
  rows = []
  for i in range(n):
    wav = root / f"clip{i}.wav"
    sf.write(wav, tiny_hf.make_audio(0.6 + 0.4 * i, seed=40 + i), 16000)
    rows.append({"id": f"it{i}", "audio": wav.name, "question": "What is the sound?", "candidates": ["dog", "rain"],
                 "answer": "dog", "text_answer": "rain", "task": "aqa",
                 "evidence": {"adversarial": "The recording was labelled as rain.",
                              "faithful": "The recording was labelled as dog."}})
  rows.append({"id": "broken", "audio": "missing.wav", "question": "q", "candidates": ["dog", "rain"],
               "answer": "dog", "text_answer": "rain", "evidence": {"adversarial": "x"}})
  path = root / "bench.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_patch_command_end_to_end_and_resume(tiny, tmp_path):
  data = write_benchmark(tmp_path)
  out = tmp_path / "out"
  args = ["patch", "--model", str(tiny.jx_dir()), "--data", str(data), "--out", str(out), "--quiet",
          "--batch-size", "2"]
  assert cli.main(args) == 0
  for name in ("patch_items.jsonl", "results.json", "site_table.md", "rescue_heatmap.png", "rho_by_depth.png",
               "displacement_scatter.png"):
    assert (out / name).stat().st_size > 0, name
  res = json.loads((out / "results.json").read_text())
  assert res["n_items"] == 3
  assert [s["id"] for s in res["skipped"]] == ["broken"]
  n_layers = tiny.model().config.text.num_layers
  assert np.array(res["rescue"], dtype=float).shape == (len(patching.SITES), n_layers, len(patching.PATCH_ROLES))
  assert -1 <= res["attribution_vs_exact_spearman"] <= 1
  lines = (out / "patch_items.jsonl").read_text().splitlines()
  first = [json.loads(x) for x in lines]
  audio_col = [k for k, (si, l, r) in enumerate(patching.make_specs(n_layers)) if patching.ROLES[r] == "audio"]
  for rec in first:  # the audio span is shared by J and A: patching it changes nothing
    np.testing.assert_allclose(np.array(rec["patched_margin"])[audio_col], rec["m_joint"], atol=1e-4)
  # crash mid-write: keep one record and half of the next line, then resume
  (out / "patch_items.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
  assert cli.main(args) == 0
  again = [json.loads(x) for x in (out / "patch_items.jsonl").read_text().splitlines()]
  assert [r["id"] for r in again] == [r["id"] for r in first]
  for a, b in zip(first, again):
    np.testing.assert_allclose(a["patched_margin"], b["patched_margin"], atol=1e-5)
