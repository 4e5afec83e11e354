"""Families keyed by the HF config's `model_type`."""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = {
    "qwen2_audio": "jaxalm.models.qwen2_audio",
    "qwen3_vl": "jaxalm.models.qwen3_vl",
}


def family(model_type: str | None, where: str = "config") -> ModuleType:
  """The family module for a HF `model_type` (clear error for unsupported ones)."""
  if model_type not in FAMILIES:
    raise ValueError(f"{where}: model_type {model_type!r} is not supported; supported: {sorted(FAMILIES)}")
  return importlib.import_module(FAMILIES[model_type])
