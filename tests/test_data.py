"""jaxalm.data: Item schema, branch prompt text, and the benchmark file readers."""

from __future__ import annotations

import csv
import dataclasses
import json
import pickle
from pathlib import Path

import pytest

from jaxalm.data import (DataError, FrozenMap, Item, ItemError, assign_splits, branch_text, infer_format,
                         load_split_ids, read_alme, read_items, read_mc2, read_mcr, read_mmau)

BENCH = Path(__file__).parent / "data" / "benchmarks"
MC2_HEAD5 = BENCH / "mc2_qwen3vl2b_conflict_head5.jsonl"
MC2_REFERENCE = Path("/work/shared/reference/gacl/qwen3vl2b_conflict.jsonl")


# ---------------------------------------------------------------------------- helpers


def touch(path: Path) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"\0")
  return path


def write_jsonl(path: Path, rows) -> Path:
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return path


def write_json(path: Path, data) -> Path:
  path.write_text(json.dumps(data, indent=1), encoding="utf-8")
  return path


def write_csv(path: Path, rows) -> Path:
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with path.open("w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
  return path


def item(**kw) -> Item:
  base = dict(id="x1", modality="audio", media=None, question="Is there a dog barking?",
              candidates=("yes", "no"), answer="no",
              evidence={"adversarial": "A dog barks loudly.", "faithful": "Only rain is heard.",
                        "irrelevant": "A man plays the violin."},
              text_answer="yes", task="aqa", benchmark="mcr-bench")
  base.update(kw)
  return Item(**base)


def mcr_native_rows():
  return [
      {"audio": "audio/0.wav", "gt": "no", "faithful": "Only rain is heard.",
       "adversarial": "A dog barks loudly.", "irrelevant": "A man plays the violin.",
       "neutral": "Is there a dog barking?"},
      {"audio": "audio/1.wav", "gt": "yes", "faithful": "A car horn honks twice.",
       "adversarial": "The street is silent.", "irrelevant": "Birds sing in a forest.",
       "neutral": "Does a car horn sound?"},
  ]


def own_rows():
  return [
      {"id": "s1", "audio": "clips/s1.wav", "question": "Which vocal sound is it?",
       "candidates": ["Laughter", "Sigh", "Cough"], "answer": "Cough", "text_answer": "Laughter",
       "evidence": {"adversarial": "Someone laughs.", "faithful": "Someone coughs.", "neutral": ""},
       "task": "vsc", "split": "test", "meta": {"source": "unit"}},
      {"id": "s2", "audio": "clips/s2.wav", "question": "Which vocal sound is it?",
       "candidates": ["Laughter", "Sigh", "Cough"], "answer": "Sigh", "task": "vsc"},
  ]


def alme_native_rows():
  return [
      {"stimulus_id": "en_0001", "audio_path": "en/clips/common_voice_en_1.mp3", "language": "EN",
       "ref_text": "The house is big.", "conflict_text": "The house is small.",
       "question": {"question_text": "Which word did the speaker say?", "choices": ["big", "small"],
                    "correct_answer": "big", "flip_type": "adjective_swap"}},
      {"stimulus_id": "en_0002", "audio_path": "en/clips/common_voice_en_2.mp3", "language": "EN",
       "ref_text": "I left at nine.", "conflict_text": "I left at ten.",
       "question": {"question_text": "What time did the speaker leave?", "choices": ["ten", "nine"],
                    "correct_answer": "nine", "flip_type": "number_swap"}},
  ]


def mmau_rows():
  return [
      {"id": "3fe64f3d", "audio_id": "./test-mini-audios/3fe64f3d.wav",
       "question": "Based on the given audio, identify the source of the speaking voice.",
       "choices": ["Man", "Woman", "Child", "Robot"], "answer": "Man", "dataset": "AudioSet",
       "task": "sound", "split": "test-mini", "category": "Reasoning",
       "sub-category": "Acoustic Source Inference", "difficulty": "medium"},
      {"id": "9a1b", "audio_id": "./test-mini-audios/9a1b.wav", "question": "What instrument plays?",
       "choices": ["piano", "guitar"], "answer": "guitar", "task": "music", "split": "test-mini"},
  ]


def mc2_rows():
  return [
      {"idx": 0, "image_id": "46962", "task": "activity_recognition", "image_path": "img/0.jpg",
       "question": "What are the sheep doing?", "answer_vision": "eating", "answer_text": "playing in a field",
       "context": "The sheep are playing in a field.", "margin_joint": 0.75, "pred_joint": "text"},
      {"idx": 1, "image_id": "277961", "task": "activity_recognition", "image_path": "img/1.jpg",
       "question": "What is the zebra doing?", "answer_vision": "eating", "answer_text": "drinking",
       "context": "The zebra is drinking."},
  ]


def make_media(root: Path, rows, key: str):
  for r in rows:
    p = r[key]
    touch(root / p)


# ---------------------------------------------------------------------------- schema


def test_item_normalises_and_is_immutable():
  it = item(candidates=["yes", "no"], meta={"k": [1, 2]})
  assert it.candidates == ("yes", "no")
  assert isinstance(it.evidence, FrozenMap) and isinstance(it.meta, FrozenMap)
  assert it.is_conflict and not item(evidence={}, text_answer=None).is_conflict
  with pytest.raises(dataclasses.FrozenInstanceError):
    it.answer = "yes"
  with pytest.raises(TypeError):
    it.evidence["adversarial"] = "x"
  assert pickle.loads(pickle.dumps(it)) == it
  assert hash(it) == hash(item(meta={"k": [1, 2]}))
  assert dataclasses.replace(it, split="dev").split == "dev"


@pytest.mark.parametrize("change, message", [
    (dict(answer="maybe"), "answer 'maybe' is not among candidates"),
    (dict(text_answer="no"), "text_answer 'no' equals the answer"),
    (dict(text_answer="perhaps"), "text_answer 'perhaps' is not among candidates"),
    (dict(candidates=("yes", "yes")), "duplicate candidates"),
    (dict(candidates=("yes",)), "at least 2 candidates"),
    (dict(candidates="yes,no"), "candidates must be a list of strings"),
    (dict(candidates=("yes", 1)), "candidates must be a list of strings"),
    (dict(answer=1), "answer must be a string"),
    (dict(modality="video"), "modality must be one of"),
    (dict(question="  "), "question must be a non-empty string"),
    (dict(evidence={"neutral": "Is there a dog?"}), "'neutral' is not evidence"),
    (dict(evidence={"conflicting": "x"}), "unknown evidence kind 'conflicting'"),
    (dict(evidence={"adversarial": ""}), "evidence 'adversarial' must be a non-empty string"),
    (dict(evidence={"adversarial": 3}), "evidence 'adversarial' must be a non-empty string"),
    (dict(options=("a",)), "1 options for 2 candidates"),
    (dict(split=3), "split must be a string"),
    (dict(media=""), "media must be a non-empty path"),
])
def test_item_validation_names_the_item(change, message):
  with pytest.raises(ItemError, match=message) as e:
    item(**change)
  assert str(e.value).startswith("item 'x1': ")


def test_item_validation_on_replace():
  with pytest.raises(ItemError, match="item 'x1': answer 'maybe'"):
    dataclasses.replace(item(), answer="maybe")


# ---------------------------------------------------------------------------- templates


def test_arb_templates_match_science_md():
  it = item()
  c = "yes, no"
  q = "Question: Is there a dog barking?\n"
  assert branch_text(it, "joint") == (
      q + "Text evidence: A dog barks loudly.\nCandidates: " + c + "\nAnswer with exactly one candidate.")
  assert branch_text(it, "faithful") == (
      q + "Text evidence: Only rain is heard.\nCandidates: " + c + "\nAnswer with exactly one candidate.")
  assert branch_text(it, "irrelevant") == (
      q + "Text evidence: A man plays the violin.\nCandidates: " + c + "\nAnswer with exactly one candidate.")
  same = q + "Candidates: " + c + "\nAnswer with exactly one candidate."
  assert branch_text(it, "same_audio") == same
  assert branch_text(it, "no_audio") == same
  # the literal template of science.md section 1
  tpl = "Question: {q}\nText evidence: {text}\nCandidates: {c}\nAnswer with exactly one candidate."
  assert branch_text(it, "joint") == tpl.format(q=it.question, text="A dog barks loudly.", c=c)


def test_template_errors_and_aliases():
  it = item(evidence={"adversarial": "A dog barks loudly."})
  with pytest.raises(ValueError, match="item 'x1': branch 'faithful' needs 'faithful' evidence"):
    branch_text(it, "faithful")
  with pytest.raises(ValueError, match="unknown branch"):
    branch_text(it, "perturbed")
  with pytest.raises(ValueError, match="'mcq' style has no evidence branches"):
    branch_text(it, "joint", style="mcq")
  with pytest.raises(ValueError, match="needs option texts"):
    branch_text(it, "joint", style="alme")
  img = item(modality="image", candidates=("eating", "drinking"), answer="eating", text_answer="drinking",
             evidence={"adversarial": "The zebra is drinking."}, benchmark="mc2")
  assert branch_text(img, "same_image") == branch_text(img, "same_audio")
  assert branch_text(img, "joint").endswith("Candidates: eating, drinking\nAnswer with exactly one candidate.")


def test_alme_and_mcq_templates():
  alme = Item(id="a1", modality="audio", media=None, question="Which word did the speaker say?",
              candidates=("A", "B"), answer="A", text_answer="B", options=("big", "small"),
              evidence={"adversarial": "The house is small."}, benchmark="alme")
  assert branch_text(alme, "joint") == ("Question: Which word did the speaker say?\nContext: The house is small.\n"
                                        "Options: A. big, B. small\nAnswer with only the option letter.")
  assert branch_text(alme, "same_audio") == ("Question: Which word did the speaker say?\n"
                                             "Options: A. big, B. small\nAnswer with only the option letter.")
  assert branch_text(alme, "same_audio", style="arb").endswith("Candidates: A, B\nAnswer with exactly one candidate.")
  mmau = Item(id="m1", modality="audio", media=None, question="What instrument plays?",
              candidates=("piano", "guitar", "drums"), answer="guitar", benchmark="mmau")
  expected = ("What instrument plays?\n\nOptions:\nA: piano\nB: guitar\nC: drums\n\n"
              "Answer with the full option text (you may include the letter).")
  assert branch_text(mmau, "same_audio") == expected == branch_text(mmau, "no_audio")


# ---------------------------------------------------------------------------- MCR-Bench


def test_mcr_native_release_format(tmp_path):
  d = tmp_path / "MCR-BENCH" / "AQA"
  d.mkdir(parents=True)
  rows = mcr_native_rows()
  make_media(d, rows, "audio")
  r = read_items(write_json(d / "AQA.json", rows))
  assert r.format == "mcr" and r.skipped == ()
  a, b = r.items
  assert (a.id, b.id) == ("aqa_0000", "aqa_0001")
  assert a.media == str(d / "audio" / "0.wav")
  assert a.question == "Is there a dog barking?"
  assert a.candidates == ("yes", "no") and a.answer == "no" and a.text_answer == "yes"
  assert dict(a.evidence) == {"faithful": "Only rain is heard.", "adversarial": "A dog barks loudly.",
                              "irrelevant": "A man plays the violin."}
  assert a.task == "aqa" and a.benchmark == "mcr-bench" and a.modality == "audio"
  assert b.answer == "yes" and b.text_answer == "no"
  assert branch_text(a, "joint") == ("Question: Is there a dog barking?\nText evidence: A dog barks loudly.\n"
                                     "Candidates: yes, no\nAnswer with exactly one candidate.")


def test_mcr_native_label_sets(tmp_path):
  vsc = [{"audio": "v.wav", "gt": "laughter", "adversarial": "Someone sneezes.", "neutral": "What sound is it?"}]
  ser = [{"audio": "s.wav", "gt": "joy", "adversarial": "The speaker is furious.", "neutral": "What emotion?"}]
  touch(tmp_path / "v.wav"), touch(tmp_path / "s.wav")
  v = read_mcr(write_json(tmp_path / "VSC.json", vsc)).items[0]
  assert v.id == "vsc_0000" and v.answer == "Laughter" and v.meta["answer_raw"] == "laughter"
  assert v.candidates == ("Laughter", "Sigh", "Cough", "Throat clearing", "Sneeze", "Sniff")
  assert v.text_answer is None  # not derivable for a 6-way task
  s = read_mcr(write_json(tmp_path / "SER.json", ser)).items[0]
  assert s.answer == "happy" and len(s.candidates) == 7


def test_mcr_own_jsonl_and_csv(tmp_path):
  rows = own_rows()
  make_media(tmp_path, rows, "audio")
  r = read_items(write_jsonl(tmp_path / "own.jsonl", rows))
  assert r.format == "mcr"
  s1, s2 = r.items
  assert s1.id == "s1" and s1.answer == "Cough" and s1.text_answer == "Laughter"
  assert dict(s1.evidence) == {"adversarial": "Someone laughs.", "faithful": "Someone coughs."}
  assert s1.split == "test" and s1.meta["source"] == "unit"
  assert s2.evidence == {} and s2.text_answer is None and not s2.is_conflict
  flat = [{"id": "c1", "audio": "clips/s1.wav", "question": "Which vocal sound is it?",
           "candidates": "Laughter|Sigh|Cough", "answer": "Cough", "adversarial": "Someone laughs.",
           "faithful": "", "text_answer": "Laughter", "meta": '{"n": 1}'},
          {"id": "c2", "audio": "clips/s2.wav", "question": "Which vocal sound is it?",
           "candidates": '["Laughter", "Sigh", "Cough"]', "answer": "Sigh", "adversarial": "A cough."}]
  c1, c2 = read_items(write_csv(tmp_path / "own.csv", flat)).items
  assert c1.candidates == ("Laughter", "Sigh", "Cough") and c1.evidence == {"adversarial": "Someone laughs."}
  assert c1.meta == {"n": 1} and c2.candidates == c1.candidates


def test_media_root_and_absolute_paths(tmp_path):
  audio = touch(tmp_path / "elsewhere" / "0.wav")
  rows = [dict(own_rows()[1], audio="0.wav")]
  data = tmp_path / "data"
  data.mkdir()
  r = read_mcr(write_jsonl(data / "x.jsonl", rows), media_root=tmp_path / "elsewhere")
  assert r.items[0].media == str(audio)
  r = read_mcr(write_jsonl(data / "y.jsonl", [dict(rows[0], audio=str(audio))]))
  assert r.items[0].media == str(audio)
  r = read_mcr(write_jsonl(data / "z.jsonl", rows), check_media=False)
  assert r.items[0].media == str(data / "0.wav")


# ---------------------------------------------------------------------------- ALME


def test_alme_native_stimuli(tmp_path):
  cv = tmp_path / "cv-corpus-22.0"
  rows = alme_native_rows()
  make_media(cv, rows, "audio_path")
  r = read_items(write_jsonl(tmp_path / "stimuli.jsonl", rows), media_root=cv)
  assert r.format == "alme"
  a, b = r.items
  assert a.id == "en_0001" and a.media == str(cv / "en/clips/common_voice_en_1.mp3")
  assert a.candidates == ("A", "B") and a.options == ("big", "small")
  assert a.answer == "A" and a.text_answer == "B" and b.answer == "B" and b.text_answer == "A"
  assert dict(a.evidence) == {"adversarial": "The house is small.", "faithful": "The house is big."}
  assert a.meta["flip_type"] == "adjective_swap" and a.meta["language"] == "EN"
  assert a.benchmark == "alme" and a.task == "alme"
  assert branch_text(a, "joint") == ("Question: Which word did the speaker say?\nContext: The house is small.\n"
                                     "Options: A. big, B. small\nAnswer with only the option letter.")
  with pytest.raises(DataError, match="stimuli.jsonl: line 1 \\(item 'en_0001'\\): media file not found"):
    read_alme(tmp_path / "stimuli.jsonl")  # relative to the file's dir, not the CV root


def test_alme_flat_rows(tmp_path):
  touch(tmp_path / "a.wav")
  rows = [{"audio": "a.wav", "question": "Which word?", "option_a": "big", "option_b": "small",
           "answer": "b", "claim": "The speaker said big."},
          {"id": "k2", "audio": "a.wav", "question": "Which word?", "options": "hot|cold",
           "answer": "hot", "conflict_text": "It is cold.", "ref_text": "It is hot."}]
  r = read_alme(write_csv(tmp_path / "alme.csv", rows))
  x, y = r.items
  assert x.id == "alme_00000" and x.answer == "B" and x.text_answer == "A" and x.options == ("big", "small")
  assert x.evidence == {"adversarial": "The speaker said big."}
  assert y.answer == "A" and y.options == ("hot", "cold") and y.evidence["faithful"] == "It is hot."


# ---------------------------------------------------------------------------- MMAU


def test_mmau_release_format(tmp_path):
  rows = mmau_rows()
  make_media(tmp_path, rows, "audio_id")
  r = read_items(write_json(tmp_path / "mmau-test-mini.json", rows))
  assert r.format == "mmau"
  a, b = r.items
  assert a.id == "3fe64f3d" and a.media == str(tmp_path / "test-mini-audios" / "3fe64f3d.wav")
  assert a.candidates == ("Man", "Woman", "Child", "Robot") and a.answer == "Man"
  assert a.evidence == {} and a.text_answer is None and a.task == "sound" and a.split == "test-mini"
  assert a.meta == {"dataset": "AudioSet", "category": "Reasoning",
                    "sub-category": "Acoustic Source Inference", "difficulty": "medium"}
  assert branch_text(b, "no_audio") == ("What instrument plays?\n\nOptions:\nA: piano\nB: guitar\n\n"
                                        "Answer with the full option text (you may include the letter).")
  assert read_mmau(tmp_path / "mmau-test-mini.json", split="test").items[0].split == "test"


# ---------------------------------------------------------------------------- MC2


def test_mc2_reference_rows():
  r = read_items(MC2_HEAD5, check_media=False)
  assert r.format == "mc2" and len(r.items) == 5 and r.skipped == ()
  first = r.items[0]
  assert first.id == "0" and first.modality == "image" and first.benchmark == "mc2"
  assert first.question == "What are the sheep doing?"
  assert first.candidates == ("eating", "playing in a field")
  assert first.answer == "eating" and first.text_answer == "playing in a field"
  assert first.task == "activity_recognition"
  assert first.media == str(BENCH / "data/mc2/noise_images/coco_noise_gs/val2014/COCO_val2014_000000046962.jpg")
  assert dict(first.meta) == {"image_id": "000000046962", "protocol_tier": "G2", "context_mode": "conflict"}
  assert first.evidence == {}  # the cached score rows carry no context text
  assert [it.answer for it in r.items] == ["eating"] * 4 + ["running"]
  assert [it.text_answer for it in r.items] == ["playing in a field", "drinking", "trotting", "drinking water",
                                                "grazing"]
  with pytest.raises(DataError, match="line 1 \\(item '0'\\): media file not found"):
    read_mc2(MC2_HEAD5)


@pytest.mark.skipif(not MC2_REFERENCE.exists(), reason="shared reference data not present")
def test_mc2_fixture_is_the_reference_head():
  head = MC2_REFERENCE.read_text().splitlines()[:5]
  assert MC2_HEAD5.read_text().splitlines() == head


def test_mc2_modes(tmp_path):
  rows = mc2_rows()
  make_media(tmp_path, rows, "image_path")
  path = write_jsonl(tmp_path / "mc2.jsonl", rows)
  conflict = read_mc2(path, mode="conflict").items
  assert conflict[0].evidence == {"adversarial": "The sheep are playing in a field."}
  assert conflict[0].is_conflict and "margin_joint" not in conflict[0].meta
  assert branch_text(conflict[1], "joint") == (
      "Question: What is the zebra doing?\nText evidence: The zebra is drinking.\n"
      "Candidates: eating, drinking\nAnswer with exactly one candidate.")
  consistent = read_mc2(path, mode="consistent").items
  assert consistent[0].evidence == {"faithful": "The sheep are playing in a field."}
  assert consistent[0].meta["context_mode"] == "consistent" and not consistent[0].is_conflict
  with pytest.raises(DataError, match="mc2.jsonl: line 1 \\(item '0'\\): MC2 mode must be one of"):
    read_mc2(path)
  tagged = write_jsonl(tmp_path / "tagged.jsonl", [dict(r, context_mode="consistent") for r in rows])
  assert read_items(tagged).items[1].evidence == {"faithful": "The zebra is drinking."}
  with pytest.raises(DataError, match="tagged.jsonl: line 1 \\(item '0'\\): row has context_mode 'consistent'"):
    read_mc2(tagged, mode="conflict")


# ---------------------------------------------------------------------------- dispatch


def test_infer_format():
  assert infer_format(mcr_native_rows()[0]) == "mcr"
  assert infer_format(own_rows()[0]) == "mcr"
  assert infer_format(alme_native_rows()[0]) == "alme"
  assert infer_format(mmau_rows()[0]) == "mmau"
  assert infer_format(mc2_rows()[0]) == "mc2"
  assert infer_format({"audio": "a.wav", "question": "q"}) is None


def test_file_level_errors(tmp_path):
  with pytest.raises(DataError, match="missing.jsonl: file not found"):
    read_items(tmp_path / "missing.jsonl")
  (tmp_path / "x.txt").write_text("{}")
  with pytest.raises(DataError, match="x.txt: unknown extension"):
    read_items(tmp_path / "x.txt")
  (tmp_path / "bad.json").write_text("[{")
  with pytest.raises(DataError, match="bad.json: not valid JSON"):
    read_items(tmp_path / "bad.json")
  p = write_jsonl(tmp_path / "odd.jsonl", [{"audio": "a.wav", "question": "q"}])
  with pytest.raises(DataError, match="odd.jsonl: line 1: cannot infer the format"):
    read_items(p)
  with pytest.raises(ValueError, match="unknown format"):
    read_items(p, "vqa")
  with pytest.raises(ValueError, match="on_error"):
    read_items(p, on_error="ignore")
  assert read_items(p, "MCR-Bench", on_error="skip").format == "mcr"
  rows = mmau_rows()  # JSONL saved under a .json name
  jl = write_jsonl(tmp_path / "lines.json", rows)
  assert [it.id for it in read_items(jl, check_media=False).items] == ["3fe64f3d", "9a1b"]


# Each case: (format, file name, good rows, bad row, expected key in skipped, message fragment).
def _cases():
  mcr, alme, mmau, mc2 = own_rows()[1], alme_native_rows()[0], mmau_rows()[1], mc2_rows()[1]
  mcr_native = mcr_native_rows()[0]
  return [
      ("mcr", "missing-field", mcr, dict(mcr, id="b1", answer=None), "b1", "missing field 'answer'"),
      ("mcr", "not-a-candidate", mcr, dict(mcr, id="b1", answer="Sneeze"), "b1",
       "answer 'Sneeze' is not among candidates"),
      ("mcr", "duplicate", mcr, dict(mcr), "s2", "duplicate id 's2' (first at line 1)"),
      ("mcr", "wrong-type", mcr, dict(mcr, id="b1", candidates="Laughter"), "b1",
       "field 'candidates' must be a list of strings"),
      ("mcr", "wrong-type-question", mcr, dict(mcr, id="b1", question=["q"]), "b1",
       "field 'question' must be a string"),
      ("mcr", "evidence-type", mcr, dict(mcr, id="b1", evidence={"adversarial": 5}), "b1",
       "field 'adversarial' must be a string"),
      ("mcr", "unknown-evidence", mcr, dict(mcr, id="b1", evidence={"misleading": "x"}), "b1",
       "unknown evidence kinds ['misleading']"),
      ("mcr", "media", mcr, dict(mcr, id="b1", audio="clips/none.wav"), "b1", "media file not found"),
      ("mcr", "native-labels", dict(mcr_native, task="aqa"), dict(mcr_native, task="aqa", gt="maybe"), "aqa_0001",
       "answer 'maybe' is not among candidates"),
      ("mcr", "bad-id", mcr, dict(mcr, id=[1]), 2, "id must be a string or an integer"),
      ("alme", "missing-field", alme, dict(alme, stimulus_id="b1", conflict_text=None), "b1",
       "missing field 'conflict_text'"),
      ("alme", "bad-answer", alme, dict(alme, stimulus_id="b1", question=dict(alme["question"], correct_answer="C")),
       "b1", "answer 'C' is neither an option letter"),
      ("alme", "one-option", alme, dict(alme, stimulus_id="b1", question=dict(alme["question"], choices=["a"])),
       "b1", "expected 2 options"),
      ("alme", "duplicate", alme, dict(alme), "en_0001", "duplicate id 'en_0001'"),
      ("alme", "media", alme, dict(alme, stimulus_id="b1", audio_path="en/none.mp3"), "b1", "media file not found"),
      ("mmau", "missing-field", mmau, dict(mmau, id="b1", choices=None), "b1", "missing field 'choices'"),
      ("mmau", "not-a-candidate", mmau, dict(mmau, id="b1", answer="violin"), "b1",
       "answer 'violin' is not among candidates"),
      ("mmau", "wrong-type", mmau, dict(mmau, id="b1", answer=2), "b1", "field 'answer' must be a string"),
      ("mmau", "duplicate", mmau, dict(mmau), "9a1b", "duplicate id '9a1b'"),
      ("mmau", "media", mmau, dict(mmau, id="b1", audio_id="none.wav"), "b1", "media file not found"),
      ("mc2", "missing-field", mc2, dict(mc2, idx=7, answer_text=None), "7", "missing field 'answer_text'"),
      ("mc2", "same-answers", mc2, dict(mc2, idx=7, answer_text="eating"), "7", "duplicate candidates"),
      ("mc2", "wrong-type", mc2, dict(mc2, idx=7, context=["x"]), "7", "field 'context' must be a string"),
      ("mc2", "duplicate", mc2, dict(mc2), "1", "duplicate id '1'"),
      ("mc2", "media", mc2, dict(mc2, idx=7, image_path="img/none.jpg"), "7", "media file not found"),
  ]


@pytest.mark.parametrize("fmt, name, good, bad, key, message", _cases(), ids=[f"{c[0]}-{c[1]}" for c in _cases()])
def test_row_errors_raise_and_skip(tmp_path, fmt, name, good, bad, key, message):
  media_key = {"mcr": "audio", "alme": "audio_path", "mmau": "audio_id", "mc2": "image_path"}[fmt]
  touch(tmp_path / good[media_key])
  path = write_jsonl(tmp_path / "t.jsonl", [good, bad])
  kw = {"mode": "conflict"} if fmt == "mc2" else {}
  row = f"line 2 (item {key!r})" if isinstance(key, str) else f"line {key}"
  with pytest.raises(DataError) as e:
    read_items(path, fmt, **kw)
  assert str(e.value).startswith(f"{path}: {row}: "), str(e.value)
  assert message in str(e.value)
  r = read_items(path, fmt, on_error="skip", **kw)
  assert len(r.items) == 1 and r.items[0].question == (good["question"]["question_text"] if fmt == "alme"
                                                        else good.get("question", good.get("neutral")))
  assert len(r.skipped) == 1
  skipped_key, reason = r.skipped[0]
  assert skipped_key == key and message in reason and str(path) in reason


def test_skip_mode_lists_everything(tmp_path):
  rows = own_rows()
  make_media(tmp_path, rows, "audio")
  lines = [json.dumps(rows[0]), "{not json", "", json.dumps([1, 2]), json.dumps(dict(rows[1], answer="Sneeze")),
           json.dumps(rows[1]), json.dumps(rows[0])]
  path = tmp_path / "mixed.jsonl"
  path.write_text("\n".join(lines) + "\n")
  r = read_items(path, on_error="skip")
  assert [it.id for it in r.items] == ["s1", "s2"]
  assert [k for k, _ in r.skipped] == [2, 4, "s2", "s1"]
  assert "line 2: not valid JSON" in r.skipped[0][1]
  assert "line 4: expected an object, got list" in r.skipped[1][1]
  assert "line 5 (item 's2'): answer 'Sneeze'" in r.skipped[2][1]
  assert "line 7 (item 's1'): duplicate id 's1' (first at line 1)" in r.skipped[3][1]
  with pytest.raises(DataError, match="mixed.jsonl: line 2: not valid JSON"):
    read_items(path)


def test_json_entries_and_csv_lines_are_named(tmp_path):
  rows = mmau_rows()
  make_media(tmp_path, rows, "audio_id")
  bad = dict(rows[1], id="zz", answer="violin")
  with pytest.raises(DataError, match="m.json: entry 3 \\(item 'zz'\\): answer 'violin'"):
    read_mmau(write_json(tmp_path / "m.json", rows + [bad]))
  flat = [dict(r, choices="|".join(r["choices"])) for r in rows + [bad]]
  with pytest.raises(DataError, match="m.csv: line 4 \\(item 'zz'\\): answer 'violin'"):
    read_mmau(write_csv(tmp_path / "m.csv", flat))


# ---------------------------------------------------------------------------- splits


def test_assign_splits(tmp_path):
  d = tmp_path
  rows = mcr_native_rows() * 2
  make_media(d, rows, "audio")
  items = read_mcr(write_json(d / "AQA.json", rows)).items
  split_file = write_json(d / "test_ids.json", {"aqa": ["aqa_0001", "aqa_0003"], "alme": ["alme_00006"]})
  assert load_split_ids(split_file) == {"aqa_0001", "aqa_0003", "alme_00006"}
  out = assign_splits(items, {"test": split_file, "dev": ["aqa_0000"]})
  assert [(it.id, it.split) for it in out] == [("aqa_0000", "dev"), ("aqa_0001", "test"), ("aqa_0002", None),
                                               ("aqa_0003", "test")]
  assert [it.id for it in assign_splits(items, {"test": split_file}, drop_unassigned=True)] == ["aqa_0001", "aqa_0003"]
  with pytest.raises(ValueError, match="'aqa_0001' is listed in splits"):
    assign_splits(items, {"test": split_file, "dev": ["aqa_0001"]})
