"""jaxalm checkpoint directories: orbax params + HF config and processor files.

Layout of a checkpoint directory:
  jaxalm.json     {"format": 1, "model_type": ..., "dtype": ..., "source": ...}
  config.json     the HF config
  params/         orbax checkpoint of the parameter tree
  (tokenizer, processor and chat-template files copied from the HF directory)
Directories are written under a temporary name and renamed into place, so an interrupted
write leaves nothing that loads.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

FORMAT = 1
META = "jaxalm.json"


class CheckpointError(ValueError):
  """A directory that is not a loadable jaxalm checkpoint."""


def save(dst: str | Path, params: Any, *, hf_config: dict, meta: dict, files=(), overwrite: bool = False) -> Path:
  """Writes a checkpoint directory atomically; `files` are copied in beside it."""
  dst = Path(dst).absolute()
  if dst.exists() and not overwrite:
    raise FileExistsError(f"{dst} already exists (pass overwrite=True / --overwrite to replace it)")
  dst.parent.mkdir(parents=True, exist_ok=True)
  tmp = dst.parent / f".{dst.name}.partial-{uuid.uuid4().hex[:8]}"
  tmp.mkdir()
  try:
    for f in files:
      shutil.copy2(f, tmp / Path(f).name)
    (tmp / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True))
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp / "params", params)
    ckptr.wait_until_finished()
    (tmp / META).write_text(json.dumps({"format": FORMAT, **meta}, indent=2, sort_keys=True))
    if dst.exists():
      shutil.rmtree(dst)
    os.rename(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return dst


def read_meta(path: str | Path) -> tuple[dict, dict]:
  """(jaxalm meta, HF config) of a checkpoint directory, with clear errors."""
  path = Path(path)
  if not (path / META).is_file():
    hint = " (a Hugging Face directory? convert it first with `jaxalm convert`)" if (path / "config.json").is_file() else ""
    raise CheckpointError(f"{path} is not a jaxalm checkpoint: no {META}{hint}")
  meta = json.loads((path / META).read_text())
  if meta.get("format") != FORMAT:
    raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
  return meta, json.loads((path / "config.json").read_text())


def restore(path: str | Path, target: Any) -> Any:
  """Restores params onto `target`, a tree of jax.ShapeDtypeStruct (with shardings)."""
  return ocp.StandardCheckpointer().restore(Path(path).absolute() / "params", target)
