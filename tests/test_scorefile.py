"""Score file: validation, append-with-fsync writer, crash-safe resume, arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxalm import scorefile as S


def _item(i, condition="adversarial", **over):
  d = {"id": f"it{i}", "condition": condition, "candidates": ["yes", "no", "maybe"], "y_a": "no",
       "y_t": "yes" if condition == "adversarial" else "no",
       "scores": {"joint": [-0.5, -1.5, -3.0], "same_audio": [-2.0, -0.2, -4.0]}, "task": "AQA",
       "split": "dev"}
  d.update(over)
  return d


def _write_lines(path, dicts):
  path.write_text("".join(json.dumps(d) + "\n" for d in dicts))


def test_roundtrip_and_extra_fields(tmp_path):
  path = tmp_path / "s.jsonl"
  items = [_item(0), _item(0, "faithful"), _item(1, scores={"joint": [0.0, -1, -2], "same_audio": [-1, 0, -2],
                                                            "no_audio": [-1, -1, -1], "probe": [0, 0, 0]})]
  S.write_scorefile(path, items)
  got = S.read_scorefile(path)
  assert [it.to_dict() for it in got] == [json.loads(json.dumps(d)) for d in items]
  assert got[0].extra == {"task": "AQA", "split": "dev"} and got[1].key == ("it0", "faithful")
  assert got[2].scores["no_audio"] == (-1.0, -1.0, -1.0)


@pytest.mark.parametrize("bad, message", [
  (lambda d: d.pop("y_t"), r"missing field\(s\) \['y_t'\]"),
  (lambda d: d["scores"].update(joint=[-1.0, -2.0]), "has 2 values for 3 candidates"),
  (lambda d: d.update(y_a="dunno"), "`y_a` 'dunno' not in candidates"),
  (lambda d: d["scores"].pop("same_audio"), "lacks branch"),
  (lambda d: d.update(condition="neutral"), "`condition` must be one of"),
  (lambda d: d.update(y_t="no"), "adversarial item needs y_t != y_a"),
  (lambda d: d.update(candidates=["yes", "yes", "no"]), "duplicate candidates"),
])
def test_malformed_line_named_by_number_and_id(tmp_path, bad, message):
  rows = [_item(0), _item(1), _item(2)]
  bad(rows[1])
  path = tmp_path / "s.jsonl"
  _write_lines(path, rows)
  with pytest.raises(S.ScoreFileError, match=message) as e:
    S.read_scorefile(path)
  assert e.value.errors[0][:2] == (2, "it1")
  assert f"{path}:2 (id 'it1')" in str(e.value)


def test_non_finite_and_duplicates_all_reported(tmp_path):
  path = tmp_path / "s.jsonl"
  good = json.dumps(_item(0))
  nan_line = json.dumps(_item(1)).replace("-1.5", "NaN")
  inf_line = json.dumps(_item(2)).replace("-3.0", "-Infinity")
  faithful_mismatch = json.dumps(_item(3, "faithful", y_t="yes"))
  path.write_text("\n".join([good, nan_line, "", inf_line, good, "{not json", faithful_mismatch]) + "\n")
  with pytest.raises(S.ScoreFileError) as e:
    S.read_scorefile(path)
  errs = e.value.errors
  assert [(ln, i) for ln, i, _ in errs] == [(2, "it1"), (4, "it2"), (5, "it0"), (6, None), (7, "it3")]
  assert "non-finite" in errs[0][2] and "non-finite" in errs[1][2]
  assert "duplicate id+condition ('it0', 'adversarial') (first on line 1)" in errs[2][2]
  assert "invalid JSON" in errs[3][2] and "faithful item needs y_t == y_a" in errs[4][2]


def test_writer_appends_and_rejects(tmp_path):
  path = tmp_path / "s.jsonl"
  with S.ScoreFileWriter(path) as w:
    w.write(_item(0))
    w.write(S.item_from_dict(_item(0, "faithful")))
    # numpy scores are accepted and written as plain floats
    w.write(_item(1, scores={"joint": np.array([-0.5, -1.5, -3.0], np.float32), "same_audio": [-1, -2, -3]}))
    with pytest.raises(ValueError, match="duplicate"):
      w.write(_item(0))
    with pytest.raises(ValueError, match="non-finite"):
      w.write(_item(2, scores={"joint": [0.0, float("nan"), 1.0], "same_audio": [0, 0, 0]}))
    assert w.completed == {("it0", "adversarial"), ("it0", "faithful"), ("it1", "adversarial")}
  assert path.read_text().count("\n") == 3
  assert [it.key for it in S.read_scorefile(path)] == [("it0", "adversarial"), ("it0", "faithful"),
                                                       ("it1", "adversarial")]


def test_resume_after_torn_last_line(tmp_path):
  path = tmp_path / "s.jsonl"
  with S.ScoreFileWriter(path) as w:
    for i in range(3):
      w.write(_item(i))
  complete = path.read_bytes()
  torn = json.dumps(_item(3)).encode()[:37]   # a crash in the middle of the 4th line
  path.write_bytes(complete + torn)
  with pytest.raises(S.ScoreFileError, match="truncated last line"):
    S.read_scorefile(path)
  assert S.completed_ids(path) == {(f"it{i}", "adversarial") for i in range(3)}
  assert path.read_bytes() == complete   # truncated back to the last complete line
  with S.ScoreFileWriter(path) as w:
    for i in range(3, 5):
      if (f"it{i}", "adversarial") not in w.completed:
        w.write(_item(i))
  assert [it.id for it in S.read_scorefile(path)] == [f"it{i}" for i in range(5)]


def test_resume_keeps_complete_item_without_newline(tmp_path):
  path = tmp_path / "s.jsonl"
  path.write_text(json.dumps(_item(0)) + "\n" + json.dumps(_item(1)))
  assert S.completed_ids(path) == {("it0", "adversarial"), ("it1", "adversarial")}
  assert path.read_text().endswith("}\n")
  with S.ScoreFileWriter(path) as w:
    w.write(_item(2))
  assert len(S.read_scorefile(path)) == 3


def test_resume_refuses_corruption_before_the_end(tmp_path):
  path = tmp_path / "s.jsonl"
  path.write_text(json.dumps(_item(0)) + "\n{broken\n" + json.dumps(_item(1)) + "\n")
  with pytest.raises(S.ScoreFileError, match=":2"):
    S.completed_ids(path)
  assert S.completed_ids(tmp_path / "absent.jsonl") == set()


def test_labels_with_unicode_line_separators(tmp_path):
  path = tmp_path / "s.jsonl"
  item = _item(0, candidates=["a\u2028b", "no", "c\u0085"], y_t="a\u2028b")
  with S.ScoreFileWriter(path) as w:
    w.write(item)
  assert S.read_scorefile(path)[0].y_t == "a\u2028b"


def test_to_arrays_pads_and_normalises():
  items = [S.item_from_dict(_item(0)),
           S.item_from_dict(_item(1, "faithful", candidates=["no", "yes"], y_a="yes", y_t="yes",
                                  scores={"joint": [-1.0, -1.0], "same_audio": [-3.0, -1.0], "x": [0, 0]}))]
  a = S.to_arrays(items)
  assert a.mask.tolist() == [[True, True, True], [True, True, False]]
  assert a.y_a.tolist() == [1, 1] and a.y_t.tolist() == [0, 1] and a.adversarial.tolist() == [True, False]
  assert sorted(a.branches) == ["joint", "same_audio"]   # "x" is not on every item
  np.testing.assert_allclose(a.branches["joint"][1, :2], [np.log(0.5), np.log(0.5)])
  assert np.isneginf(a.branches["joint"][1, 2])
  np.testing.assert_allclose(np.exp(a.branches["same_audio"][0]).sum(), 1.0)
  raw = S.to_arrays(items, normalize=False)
  np.testing.assert_array_equal(raw.branches["joint"][0], [-0.5, -1.5, -3.0])
  assert a.extra["split"].tolist() == ["dev", "dev"]
  sub = a.subset(a.adversarial)
  assert len(sub) == 1 and sub.ids.tolist() == ["it0"]
