"""Converter and loader: key names, accounting, bad input, atomic writes, sharded loading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxalm
import tiny_hf
from jaxalm import checkpoint
from jaxalm.converters import ConversionError, convert
from jaxalm.converters.common import load_hf_params


def _same_tree(a, b):
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [k for k, _ in la] == [k for k, _ in lb]
  for (k, x), (_, y) in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(k))


@pytest.mark.parametrize("variant", [dict(names="legacy"), dict(names="new", sharded=True),
                                     dict(names="legacy", sharded=True)])
def test_key_layouts_convert_to_the_same_params(tiny, variant):
  _, reference, _ = load_hf_params(tiny.hf_dir("gqa"))
  _, params, _ = load_hf_params(tiny.hf_dir("gqa", **variant))
  _same_tree(reference, params)


def test_legacy_and_new_names_really_differ_on_disk(tiny):
  new = load_file(tiny.hf_dir("gqa") / "model.safetensors")
  legacy = load_file(tiny.hf_dir("gqa", names="legacy") / "model.safetensors")
  assert "model.language_model.embed_tokens.weight" in new
  assert "language_model.model.embed_tokens.weight" in legacy


def test_loaded_params_equal_hf_weights(tiny):
  model = tiny.model()
  sd = tiny_hf.read_state_dict(tiny.hf_dir())
  q = sd["model.language_model.layers.1.self_attn.q_proj.weight"].numpy()
  np.testing.assert_array_equal(np.asarray(model.params["language_model"]["layers"]["self_attn"]["q_proj"]["kernel"][1]), q.T)
  conv = sd["model.audio_tower.conv2.weight"].numpy()
  np.testing.assert_array_equal(np.asarray(model.params["audio_tower"]["conv2"]["kernel"]), conv.transpose(2, 1, 0))
  assert model.processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>") == model.config.audio_token_id


def _copy_with(src: Path, dst: Path, edit) -> Path:
  shutil.copytree(src, dst)
  tensors = load_file(dst / "model.safetensors")
  edit(tensors)
  save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
  return dst


def test_missing_key_is_named(tiny, tmp_path):
  src = _copy_with(tiny.hf_dir(), tmp_path / "hf",
                   lambda t: t.pop("model.language_model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(ConversionError, match=r"language_model/layers/mlp/up_proj/kernel \(layers \[1\]\)"):
    convert(src, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_extra_key_is_named(tiny, tmp_path):
  src = _copy_with(tiny.hf_dir(), tmp_path / "hf",
                   lambda t: t.__setitem__("model.audio_tower.extra.weight", np.zeros(3, np.float32)))
  with pytest.raises(ConversionError, match="unexpected key 'model.audio_tower.extra.weight'"):
    convert(src, tmp_path / "out")


def test_misshaped_key_is_named(tiny, tmp_path):
  key = "model.multi_modal_projector.linear.weight"
  src = _copy_with(tiny.hf_dir(), tmp_path / "hf", lambda t: t.__setitem__(key, t[key][:, :-1].copy()))
  with pytest.raises(ConversionError, match=f"key '{key}' has shape"):
    convert(src, tmp_path / "out")


def test_extra_layer_is_named(tiny, tmp_path):
  key = "model.language_model.layers.1.input_layernorm.weight"
  src = _copy_with(tiny.hf_dir(), tmp_path / "hf",
                   lambda t: t.__setitem__(key.replace(".1.", ".7."), t[key].copy()))
  with pytest.raises(ConversionError, match="names layer 7"):
    convert(src, tmp_path / "out")


def test_pickle_is_refused_by_default_and_allowed_on_request(tiny, tmp_path):
  src = tiny.hf_dir("gqa", pickle=True)
  assert list(src.glob("*.bin")) and not list(src.glob("*.safetensors"))
  with pytest.raises(ConversionError, match="pickle"):
    convert(src, tmp_path / "refused")
  assert not (tmp_path / "refused").exists()
  _, params, _ = load_hf_params(src, allow_pickle=True)
  _, reference, _ = load_hf_params(tiny.hf_dir("gqa"))
  _same_tree(reference, params)


def test_bad_directories_get_clear_errors(tiny, tmp_path):
  with pytest.raises(ConversionError, match="no config.json"):
    convert(tmp_path, tmp_path / "out")
  src = tmp_path / "other"
  shutil.copytree(tiny.hf_dir(), src)
  cfg = json.loads((src / "config.json").read_text())
  (src / "config.json").write_text(json.dumps({**cfg, "model_type": "llama_but_not"}))
  with pytest.raises(ValueError, match="model_type 'llama_but_not' is not supported"):
    convert(src, tmp_path / "out")
  with pytest.raises(checkpoint.CheckpointError, match="convert it first"):
    jaxalm.load(tiny.hf_dir())
  garbage = tmp_path / "garbage"
  shutil.copytree(tiny.hf_dir(), garbage)
  (garbage / "model.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(ConversionError, match="model.safetensors: unreadable"):
    convert(garbage, tmp_path / "out")


def test_interrupted_conversion_leaves_nothing_loadable(tiny, tmp_path, monkeypatch):
  import orbax.checkpoint as ocp

  def boom(*a, **k):
    raise KeyboardInterrupt("killed mid-write")
  monkeypatch.setattr(ocp.StandardCheckpointer, "save", boom)
  with pytest.raises(KeyboardInterrupt):
    convert(tiny.hf_dir(), tmp_path / "out")
  assert list(tmp_path.iterdir()) == []


def test_existing_destination_is_not_overwritten_without_asking(tiny, tmp_path):
  dst = tmp_path / "out"
  dst.mkdir()
  with pytest.raises(FileExistsError):
    convert(tiny.hf_dir(), dst)


def test_cli_convert_and_bfloat16(tiny, tmp_path):
  dst = tmp_path / "bf16"
  exe = Path(sys.executable).parent / "jaxalm"
  res = subprocess.run([str(exe), "convert", str(tiny.hf_dir()), str(dst), "--dtype", "bfloat16"],
                       capture_output=True, text=True)
  assert res.returncode == 0, res.stderr
  model = jaxalm.load(dst)
  assert {str(x.dtype) for x in jax.tree.leaves(model.params)} == {"bfloat16"}
  res = subprocess.run([str(exe), "convert", str(tiny.hf_dir("gqa", pickle=True)), str(tmp_path / "p")],
                       capture_output=True, text=True)
  assert res.returncode == 2 and "--allow-pickle" in res.stderr


SHARDED_SCRIPT = """
import sys, numpy as np, jax
import jaxalm
from jaxalm.sharding import make_mesh
assert len(jax.devices()) == 8, jax.devices()
inputs = dict(np.load(sys.argv[2]))
mesh = make_mesh(data=2, fsdp=2, tensor=2)
model = jaxalm.load(sys.argv[1], mesh=mesh)
q = model.params["language_model"]["layers"]["self_attn"]["q_proj"]["kernel"]
assert len(q.sharding.device_set) == 8 and not q.sharding.is_fully_replicated, q.sharding
logits = jax.jit(model.forward)(model.params, **inputs).logits
np.save(sys.argv[3], np.asarray(logits))
"""


def test_forward_on_eight_simulated_devices_matches_single_device(tiny, batch, tmp_path):
  np.savez(tmp_path / "inputs.npz", **batch)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  res = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, str(tiny.jx_dir()), str(tmp_path / "inputs.npz"),
                        str(tmp_path / "out.npy")], env=env, capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-3000:]
  model = tiny.model()
  single = np.asarray(jax.jit(model.forward)(model.params, **batch).logits)
  assert np.abs(np.load(tmp_path / "out.npy") - single).max() <= 1e-5
