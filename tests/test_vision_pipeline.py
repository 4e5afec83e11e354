"""The vision pipeline on a tiny Qwen3-VL checkpoint: shared-prefix candidate scores on image
items (several image sizes in one batch) against full forwards and HF, and `jaxalm
arbitration` / `jaxalm metrics` end to end on an MC2-format file with PNG images."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tiny_hf_vl as tv  # noqa: E402
import jaxalm  # noqa: E402
from jaxalm.branches import BranchError, Scorer  # noqa: E402
from jaxalm.cli import main  # noqa: E402
from jaxalm.data.schema import Item  # noqa: E402
from jaxalm.data.templates import branch_text  # noqa: E402
from jaxalm.models import qwen3_vl  # noqa: E402
from jaxalm.scoring import score_full  # noqa: E402

ATOL = 1e-4
BRANCHES = ("joint", "faithful", "same_audio", "no_audio")
# (height, width): 4x4, 6x10, 12x4, 6x6 and 8x10 patches after the processor's resizing.
SIZES = ((64, 64), (100, 150), (200, 60), (90, 90), (130, 170))
QUESTION = "What is in the picture?"
CANDIDATES = (("cat", "dog"), ("a red car", "tree", "the dog"), ("red", "blue"), ("A", "B"), ("dog", "horse"))


@pytest.fixture(scope="module")
def vl(tmp_path_factory):
  """(tokenizer, loaded jaxalm model, HF torch model, image dir)."""
  from jaxalm.converters import convert
  root = tmp_path_factory.mktemp("vl")
  tok = tv.make_tokenizer()
  src = tv.make_checkpoint(root / "hf", "gqa", seed=3, tokenizer=tok)
  model = jaxalm.load(convert(src, root / "jaxalm"))
  images = root / "images"
  images.mkdir()
  for i, (h, w) in enumerate(SIZES):
    tv.make_image(h, w, seed=50 + i).save(images / f"img{i}.png")
  return tok, model, tv.build_model("gqa", seed=3, tokenizer=tok), images


def _items(images, n=len(SIZES)):
  return [Item(id=f"img{i}", modality="image", media=str(images / f"img{i}.png"), question=QUESTION,
               candidates=CANDIDATES[i], answer=CANDIDATES[i][0], text_answer=CANDIDATES[i][1],
               evidence={"adversarial": f"The caption says it is {CANDIDATES[i][1]}.",
                         "faithful": f"The caption says it is {CANDIDATES[i][0]}."}, benchmark="mc2")
          for i in range(n)]


def test_hooks(vl):
  _, model, _, images = vl
  assert model.family.MODALITY == "image"
  assert type(model.processor).__name__ == "Qwen3VLProcessor" and model.tokenizer is model.processor.tokenizer
  img = qwen3_vl.load_media(images / "img1.png")
  assert img.mode == "RGB" and img.size == (150, 100)
  inputs, n = qwen3_vl.media_inputs(model.config, img, model.processor)
  assert inputs["image_grid_thw"].tolist() == [1, 6, 10] and n == 15
  assert inputs["pixel_values"].shape == (60, model.config.vision.patch_dim)
  # Without the processor, or with its image processor alone.
  with pytest.raises(ValueError, match="image processor"):
    qwen3_vl.media_inputs(model.config, img)
  same, _ = qwen3_vl.media_inputs(model.config, img, model.processor.image_processor)
  np.testing.assert_array_equal(same["pixel_values"], inputs["pixel_values"])
  out = qwen3_vl.collate_media([inputs, inputs, inputs])
  assert out["pixel_values"].shape == (192, inputs["pixel_values"].shape[1])
  np.testing.assert_array_equal(out["pixel_values"][60:120], inputs["pixel_values"])
  assert not out["pixel_values"][180:].any() and out["image_grid_thw"].shape == (3, 3)
  assert [qwen3_vl.patch_bucket(n) for n in (1, 64, 65, 500, 513, 3000)] == [64, 64, 128, 512, 640, 3072]
  bad = images / "broken.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  with pytest.raises(qwen3_vl.ImageError, match="broken.png"):
    qwen3_vl.load_media(bad)
  with pytest.raises(qwen3_vl.ImageError, match="missing.png"):
    qwen3_vl.load_media(images / "missing.png")
  with pytest.raises(BranchError, match="needs audio"):
    Scorer(model, ("perturbed",)).plan(_items(images, 1)[0])


@pytest.fixture(scope="module")
def scored(vl):
  """(plans, scores) of five items with five image sizes, every branch, in one call."""
  _, model, _, images = vl
  scorer = Scorer(model, BRANCHES)
  plans = [scorer.plan(it) for it in _items(images)]
  return plans, scorer.score_plans(plans)


def test_shared_prefix_scores_equal_full_forwards(vl, scored):
  """Every branch x candidate of five items with five image sizes, scored in one call,
  against one full forward (no cache) of each whole prompt + label."""
  _, model, _, _ = vl
  plans, got = scored
  assert len({tuple(m["image_grid_thw"]) for p in plans for m in p.media if m is not None}) == len(SIZES)
  wholes, media, starts, lens, want_keys = [], [], [], [], []
  for plan in plans:
    for r, (slot, ids, start, n) in enumerate(plan.rows):
      wholes.append(plan.prefix_ids[slot] + ids)
      if plan.media[slot] is not None:
        media.append(plan.media[slot])
      starts.append(len(plan.prefix_ids[slot]) + start)
      lens.append(n)
      want_keys.append((plan.item.id, plan.branches[r // len(plan.item.candidates)], r % len(plan.item.candidates)))
  length = max(map(len, wholes))
  inputs = {"input_ids": np.zeros((len(wholes), length), np.int32),
            "attention_mask": np.zeros((len(wholes), length), np.int32)}
  for i, w in enumerate(wholes):
    inputs["input_ids"][i, :len(w)] = w
    inputs["attention_mask"][i, :len(w)] = 1
  inputs.update(model.family.collate_media(media))
  full = jax.jit(score_full, static_argnames=("forward", "max_label_len"))
  want = np.asarray(full(model.params, inputs, np.array(starts), np.array(lens), forward=model.forward,
                         max_label_len=8))
  by_id = {p.item.id: g for p, g in zip(plans, got)}
  err = max(abs(by_id[i][b][c] - w) for (i, b, c), w in zip(want_keys, want))
  print(f"shared prefix vs full forwards: max-abs error {err:.2e} over {len(want)} rows")
  assert err <= ATOL
  # The image changes the scores (no_audio has no image tokens at all).
  assert all(np.abs(g["same_audio"] - g["no_audio"]).max() > 1e-3 for g in got)


def test_scores_equal_hf(vl, scored):
  """The joint rows' token ids are the HF processor's chat prompt + label, and the
  shared-prefix scores equal HF's log-probabilities of the labels."""
  _, model, hf, _ = vl
  proc = model.processor
  err = 0.0
  for plan, g in zip(*scored):
    it = plan.item
    assert plan.branches[0] == "joint"  # its rows come first
    prompt = tv.make_prompt(proc, branch_text(it, "joint"), 1)
    assert prompt.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
    for c, cand in enumerate(it.candidates):
      slot, ids, start, n = plan.rows[c]
      inputs = proc(text=[prompt + cand], images=[qwen3_vl.load_media(it.media)],
                    return_tensors="np")
      hf_ids = np.asarray(inputs["input_ids"])[0]
      assert hf_ids.tolist() == plan.prefix_ids[slot] + ids
      with torch.no_grad():
        logits = hf(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}).logits[0].double()
      logp = torch.log_softmax(logits, -1).numpy()
      at = len(plan.prefix_ids[slot]) + start + np.arange(n)
      want = float(logp[at - 1, hf_ids[at]].sum())
      err = max(err, abs(g["joint"][c] - want))
  print(f"shared prefix vs HF: max-abs error {err:.2e}")
  assert err <= ATOL


@pytest.fixture(scope="module")
def mc2_run(vl, tmp_path_factory):
  """`jaxalm arbitration` on an MC2 file: 8 good rows (conflict and consistent, dev and test),
  a corrupt image and a missing one."""
  _, model, _, images = vl
  root = tmp_path_factory.mktemp("mc2")
  (root / "imgs").mkdir()
  rows = []
  for i in range(8):
    h, w = SIZES[i % 4]
    tv.make_image(h, w, seed=100 + i).save(root / "imgs" / f"{i}.png")
    vision, text = (("red", "blue"), ("cat", "dog"), ("blue", "red"), ("dog", "cat"))[i % 4]
    mode = "conflict" if i % 2 == 0 else "consistent"
    rows.append({"idx": i, "image_path": f"imgs/{i}.png", "question": "What does the image show?",
                 "answer_vision": vision, "answer_text": text, "task": "animal" if i % 2 else "color",
                 "context": f"The caption says it is {text if mode == 'conflict' else vision}.",
                 "context_mode": mode, "split": "dev" if i < 4 else "test"})
  (root / "imgs" / "corrupt.png").write_bytes(b"not an image")
  rows.append({**rows[0], "idx": "corrupt", "image_path": "imgs/corrupt.png"})
  rows.append({**rows[0], "idx": "missing", "image_path": "imgs/missing.png"})
  data = root / "mc2.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = root / "out"
  assert main(["arbitration", "--model", str(model.path), "--data", str(data), "--format", "mc2", "--out", str(out),
               "--batch-size", "8", "--bootstrap", "20", "--no-progress"]) == 0
  return out


def test_arbitration_end_to_end(mc2_run):
  for name in ("scores.jsonl", "summary.json", "margins.png", "frontier.png"):
    assert (mc2_run / name).stat().st_size > 0, name
  assert (mc2_run / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  lines = [json.loads(l) for l in (mc2_run / "scores.jsonl").read_text().splitlines()]
  assert sorted((l["id"], l["condition"]) for l in lines) == sorted(
      (str(i), "adversarial" if i % 2 == 0 else "faithful") for i in range(8))
  for l in lines:
    assert set(l["scores"]) == {"joint", "same_audio", "no_audio"}  # no perturbed branch for images
    assert l["modality"] == "image" and l["split"] == ("dev" if int(l["id"]) < 4 else "test")
    assert all(np.isfinite(v).all() and max(v) < 0 for v in l["scores"].values())
  summary = json.loads((mc2_run / "summary.json").read_text())
  assert summary["branches"] == ["joint", "faithful", "same_audio", "no_audio"]
  skipped = {s["id"]: s["reason"] for s in summary["skipped"]}
  assert set(skipped) == {"corrupt", "missing"}
  assert "corrupt.png" in skipped["corrupt"] and "missing.png" in skipped["missing"]
  assert summary["counts"]["n_lines"] == 8 and "error" not in summary["selection"]
  assert {"gacl", "aad"} <= set(summary["nauc"]["methods"])


def _gacl(z_j, z_a, lam=0.5, tau=0.5, alpha_max=1.0):
  """science.md section 4, on candidate log-softmaxed scores."""
  z_j, z_a = z_j - np.logaddexp.reduce(z_j), z_a - np.logaddexp.reduce(z_a)
  top = np.sort(z_a)[::-1]
  r_a = np.clip((top[0] - top[1]) / tau, 0, 1)
  n_out = float(np.argmax(z_a) != np.argmax(z_j))
  alpha = np.clip(lam * r_a * n_out, 0, alpha_max)
  return z_j + alpha * (z_a - z_j), alpha


def test_gacl_defaults_and_metrics(mc2_run, capsys):
  """The summary applies GACL at lambda 0.5, tau 0.5, and `jaxalm metrics --json` reproduces it."""
  summary = json.loads((mc2_run / "summary.json").read_text())
  gacl = summary["diagnostics"]["gacl"]
  assert gacl["params"] == {"lam": 0.5, "tau": 0.5, "alpha_max": 1.0}
  lines = [json.loads(l) for l in (mc2_run / "scores.jsonl").read_text().splitlines()]
  correct, fired = {"adversarial": [], "faithful": []}, {"adversarial": [], "faithful": []}
  for l in lines:
    z, alpha = _gacl(np.array(l["scores"]["joint"]), np.array(l["scores"]["same_audio"]))
    correct[l["condition"]].append(l["candidates"][int(np.argmax(z))] == l["y_a"])
    fired[l["condition"]].append(alpha > 0)
  assert any(fired["adversarial"] + fired["faithful"])  # the gate opens on some line of this seed
  assert gacl["conflict_acc"] == pytest.approx(100 * np.mean(correct["adversarial"]), abs=1e-9)
  assert gacl["faithful_acc"] == pytest.approx(100 * np.mean(correct["faithful"]), abs=1e-9)
  assert gacl["gate_rate"] == pytest.approx(100 * np.mean(fired["adversarial"]), abs=1e-9)
  capsys.readouterr()
  assert main(["metrics", str(mc2_run / "scores.jsonl"), "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["n_items"] == 8 and report["gacl"]["params"] == gacl["params"]
  for key in ("conflict_acc", "faithful_acc", "conflict_gain", "faithful_drop", "gate_rate"):
    assert report["gacl"][key] == gacl[key], key
  assert report["joint"]["conflict_acc"] == summary["diagnostics"]["joint"]["conflict_acc"]


def test_greedy_generation_after_images_equals_hf(vl):
  """`jaxalm.generation.generate` continues image prompts (left-padded, two image sizes) at
  HF's positions: the cache's rope_delta offsets every decoding step."""
  from jaxalm.generation import generate
  _, model, hf, images = vl
  proc = model.processor
  prompts = [tv.make_prompt(proc, "Describe the image.", 1), tv.make_prompt(proc, "What color is the object?", 1)]
  imgs = [qwen3_vl.load_media(images / f"img{i}.png") for i in (1, 2)]
  inputs = {k: np.asarray(v) for k, v in proc(text=prompts, images=imgs, return_tensors="np", padding=True,
                                               padding_side="left").items()}
  got = np.asarray(generate(model, {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}, max_new_tokens=6))
  with torch.no_grad():
    want = hf.generate(**{k: torch.from_numpy(v) for k, v in inputs.items()}, do_sample=False, max_new_tokens=6,
                       min_new_tokens=6, pad_token_id=0)[:, inputs["input_ids"].shape[1]:].numpy()
  np.testing.assert_array_equal(got, want)


def test_trie_constrained_gacl_on_images(vl):
  """Generation-time GACL (prefix-trie constrained short labels) on image items: with
  single-token labels it decides as whole-label candidate scoring does; multi-token labels
  always decode to a complete candidate."""
  from jaxalm import decoding
  _, model, _, images = vl
  # (image, candidates); on image 3 the branches of this tiny random model disagree
  cases = ((3, ("A", "B")), (1, ("red", "horse")), (3, ("B", "A")), (0, ("horse", "red")))
  items = [Item(id=f"one{k}", modality="image", media=str(images / f"img{i}.png"), question=QUESTION,
                candidates=c, answer=c[0], text_answer=c[1],
                evidence={"adversarial": f"The caption says it is {c[1]}."}, benchmark="mc2")
           for k, (i, c) in enumerate(cases)]
  scorer = Scorer(model, ("joint", "same_audio"), batch_size=4)
  scores = scorer.score_plans([scorer.plan(it) for it in items])
  joint = decoding.decode_items(scorer, items, mode="joint")
  gacl = decoding.decode_items(scorer, items, mode="gacl")
  for it, s, j, g in zip(items, scores, joint, gacl):
    z_j = np.asarray(jax.nn.log_softmax(s["joint"]))
    z_a = np.asarray(jax.nn.log_softmax(s["same_audio"]))
    assert j.index == int(np.argmax(z_j)), it.id
    z_g, _ = _gacl(z_j, z_a)
    assert g.index == int(np.argmax(z_g)), it.id
  assert sum(g.fired for g in gacl) >= 2
  multi = decoding.decode_items(scorer, _items(images), mode="gacl")
  assert all(d.label in it.candidates for d, it in zip(multi, _items(images)))
