"""Shared fixtures: tiny HF Qwen2-Audio checkpoints, converted once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tiny_hf  # noqa: E402


class TinyModels:
  """Builds (once) HF checkpoint dirs, their conversions, and the torch reference models."""

  def __init__(self, root: Path):
    self.root = root
    self._hf, self._jx, self._torch, self._loaded = {}, {}, {}, {}

  def hf_dir(self, name: str = "gqa", **variant) -> Path:
    key = (name, tuple(sorted(variant.items())))
    if key not in self._hf:
      tag = "-".join([name] + [f"{k}={v}" for k, v in sorted(variant.items())])
      self._hf[key] = tiny_hf.make_checkpoint(self.root / "hf" / tag, name, **variant)
    return self._hf[key]

  def jx_dir(self, name: str = "gqa", dtype: str | None = None) -> Path:
    key = (name, dtype)
    if key not in self._jx:
      from jaxalm.converters import convert
      self._jx[key] = convert(self.hf_dir(name), self.root / "jx" / f"{name}-{dtype}", dtype=dtype)
    return self._jx[key]

  def model(self, name: str = "gqa", dtype: str | None = None):
    key = (name, dtype)
    if key not in self._loaded:
      import jaxalm
      self._loaded[key] = jaxalm.load(self.jx_dir(name, dtype))
    return self._loaded[key]

  def torch_model(self, name: str = "gqa"):
    if name not in self._torch:
      self._torch[name] = tiny_hf.load_hf_model(self.hf_dir(name))
    return self._torch[name]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyModels:
  return TinyModels(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def processor():
  return tiny_hf.make_processor()


@pytest.fixture(scope="session")
def batch(processor) -> dict:
  """Four right-padded audio+text items of 0.5 s, 1.3 s, 2 s and 30 s."""
  return tiny_hf.make_inputs(processor, 4, seed=0)
