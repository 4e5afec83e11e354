"""Conversion of a Hugging Face checkpoint directory into a jaxalm checkpoint.

Tensors are read with numpy from safetensors (no torch). Names map onto the parameter tree
almost verbatim: a family module declares prefix renames (legacy -> current names), prefixes
to strip and keys to ignore; `layers.<i>.` becomes index i of the stacked `layers` subtree;
`weight` becomes `kernel` (linear: transposed; conv: (out, in, k) -> (k, in, out)),
`scale` (norms) or `embedding`. Every HF key must be used and every parameter filled.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from jaxalm import checkpoint
from jaxalm.models import registry
from jaxalm.nn.params import ParamSpec

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
WEIGHT_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES
SKIP_FILES = {"config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json", checkpoint.META}


class ConversionError(ValueError):
  """A checkpoint that cannot be converted faithfully."""


def _tensor_sources(src: Path, allow_pickle: bool) -> Iterator[tuple[str, Any]]:
  """(name, loader) for every tensor of the directory."""
  safes = sorted(src.glob("*.safetensors"))
  pickles = sorted(p for p in src.iterdir() if p.suffix in PICKLE_SUFFIXES)
  if not safes and not pickles:
    raise ConversionError(f"{src}: no weights found (*.safetensors)")
  index = src / "model.safetensors.index.json"
  if index.is_file():
    listed = set(json.loads(index.read_text())["weight_map"].values())
    missing = sorted(f for f in listed if not (src / f).is_file())
    if missing:
      raise ConversionError(f"{index}: shard file(s) missing: {missing}")
    safes = [src / f for f in sorted(listed)]
  if safes:
    from safetensors import safe_open
    for path in safes:
      try:
        handle = safe_open(str(path), framework="numpy")
      except Exception as e:
        raise ConversionError(f"{path}: unreadable safetensors file: {e}") from e
      with handle as f:
        for name in f.keys():
          yield name, (lambda f=path, n=name: _read_safetensor(f, n)), path
    return
  if not allow_pickle:
    raise ConversionError(
        f"{src}: only pickle weights ({', '.join(p.name for p in pickles)}); pickle files can execute code "
        "when loaded, so they are refused. Convert them to safetensors, or pass --allow-pickle if you trust them.")
  try:
    import torch
  except ImportError as e:
    raise ConversionError("--allow-pickle needs torch to unpickle the weights") from e
  for path in pickles:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, t in state.items():
      yield name, (lambda t=t: t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()), path


def _read_safetensor(path: Path, name: str) -> np.ndarray:
  from safetensors import safe_open
  with safe_open(str(path), framework="numpy") as f:
    return f.get_tensor(name)


def _canonical(name: str, mapping) -> str | None:
  if any(re.fullmatch(p, name) for p in mapping.IGNORE):
    return None
  for old, new in mapping.RENAMES:
    if name.startswith(old):
      name = new + name[len(old):]
      break
  for prefix in mapping.STRIP:
    if name.startswith(prefix):
      name = name[len(prefix):]
  return name


def _locate(name: str, spec: dict) -> tuple[tuple[str, ...], int | None]:
  """(path in the parameter tree, layer index or None) for a canonical HF name."""
  parts = name.split(".")
  path, layer = [], None
  node: Any = spec
  i = 0
  while i < len(parts):
    part = parts[i]
    if part == "layers" and i + 1 < len(parts) and parts[i + 1].isdigit():
      layer = int(parts[i + 1])
      path.append("layers")
      node = node.get("layers") if isinstance(node, dict) else None
      i += 2
      continue
    if i == len(parts) - 1 and isinstance(node, dict):
      if part == "weight":
        part = next((k for k in ("kernel", "scale", "embedding") if k in node), part)
    path.append(part)
    node = node.get(part) if isinstance(node, dict) else None
    if node is None:
      raise KeyError(name)
    i += 1
  if not isinstance(node, ParamSpec):
    raise KeyError(name)
  return tuple(path), layer


def _transform(leaf: str, x: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and x.ndim == 2:
    return x.T
  if leaf == "kernel" and x.ndim == 3:
    return x.transpose(2, 1, 0)
  return x


def _get(tree: dict, path) -> Any:
  for p in path:
    tree = tree[p]
  return tree


def _set(tree: dict, path, value) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _paths(spec: Any, prefix=()) -> Iterator[tuple[tuple[str, ...], ParamSpec]]:
  if isinstance(spec, ParamSpec):
    yield prefix, spec
  else:
    for k, v in spec.items():
      yield from _paths(v, prefix + (k,))


def load_hf_params(src: str | Path, *, dtype: str | None = None, allow_pickle: bool = False):
  """Reads a HF checkpoint directory into (family config, params tree of numpy arrays, HF config)."""
  src = Path(src)
  if not (src / "config.json").is_file():
    raise ConversionError(f"{src}: no config.json (expected a Hugging Face checkpoint directory)")
  hf_config = json.loads((src / "config.json").read_text())
  family = registry.family(hf_config.get("model_type"), where=str(src / "config.json"))
  cfg = family.Config.from_hf(hf_config)
  mapping = importlib.import_module(f"jaxalm.converters.{family.MODEL_TYPE}")
  spec = family.spec(cfg)
  out: dict = {}
  filled: dict[tuple, np.ndarray] = {}
  for path, s in _paths(spec):
    n_layers = s.shape[0] if s.axes[:1] == ("layers",) else None
    filled[path] = np.zeros(n_layers or 1, bool)
  for name, load, file in _tensor_sources(src, allow_pickle):
    canonical = _canonical(name, mapping)
    if canonical is None:
      continue
    try:
      path, layer = _locate(canonical, spec)
    except KeyError:
      raise ConversionError(f"{file.name}: unexpected key {name!r} (no parameter of {family.MODEL_TYPE} matches it)")
    s = _get(spec, path)
    value = _transform(path[-1], load())
    stacked = s.axes[:1] == ("layers",)
    if stacked != (layer is not None):
      raise ConversionError(f"{file.name}: key {name!r} does not match the layer structure of {'/'.join(path)}")
    want = s.shape[1:] if stacked else s.shape
    if tuple(value.shape) != tuple(want):
      raise ConversionError(f"{file.name}: key {name!r} has shape {tuple(value.shape)} (after transposing), "
                            f"expected {tuple(want)} for {'/'.join(path)}")
    if stacked and layer >= s.shape[0]:
      raise ConversionError(f"{file.name}: key {name!r} names layer {layer}, but the config has {s.shape[0]} layers")
    index = layer if stacked else 0
    if filled[path][index]:
      raise ConversionError(f"{file.name}: key {name!r} appears twice")
    if stacked:
      if path not in _leaf_arrays(out):
        _set(out, path, np.zeros(s.shape, value.dtype))
      _get(out, path)[layer] = value
    else:
      _set(out, path, value)
    filled[path][index] = True
  missing = [f"{'/'.join(p)}" + (f" (layers {np.flatnonzero(~m).tolist()})" if m.size > 1 else "")
             for p, m in filled.items() if not m.all()]
  if missing:
    raise ConversionError(f"{src}: parameter(s) not filled by any key: {', '.join(missing)}")
  if dtype is not None:
    target = np.dtype(_numpy_dtype(dtype))
    out = _map(out, lambda x: x.astype(target) if np.issubdtype(x.dtype, np.floating) or x.dtype.name == "bfloat16" else x)
  return cfg, out, hf_config


def _leaf_arrays(tree: dict, prefix=()) -> set:
  found = set()
  for k, v in tree.items():
    if isinstance(v, dict):
      found |= _leaf_arrays(v, prefix + (k,))
    else:
      found.add(prefix + (k,))
  return found


def _map(tree, fn):
  return {k: _map(v, fn) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


def _numpy_dtype(name: str):
  if name == "bfloat16":
    import ml_dtypes
    return ml_dtypes.bfloat16
  if name not in ("float32", "float16"):
    raise ConversionError(f"unsupported dtype {name!r} (float32, bfloat16 or float16)")
  return name


def convert(src: str | Path, dst: str | Path, *, dtype: str | None = None, allow_pickle: bool = False,
            overwrite: bool = False) -> Path:
  """Converts HF checkpoint directory `src` into jaxalm checkpoint `dst` (atomically)."""
  src = Path(src)
  cfg, params, hf_config = load_hf_params(src, dtype=dtype, allow_pickle=allow_pickle)
  files = [p for p in sorted(src.iterdir())
           if p.is_file() and p.name not in SKIP_FILES and p.suffix not in WEIGHT_SUFFIXES]
  leaf_dtypes = {str(x.dtype) for x in _flatten(params)}
  meta = {"model_type": hf_config["model_type"], "dtype": dtype or "/".join(sorted(leaf_dtypes)),
          "source": str(src.absolute())}
  return checkpoint.save(dst, params, hf_config=hf_config, meta=meta, files=files, overwrite=overwrite)


def _flatten(tree):
  for v in tree.values():
    if isinstance(v, dict):
      yield from _flatten(v)
    else:
      yield v
