"""`jaxalm.load`: a converted checkpoint as config + params + processor + pure forward."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxalm import checkpoint, sharding
from jaxalm.models import registry
from jaxalm.nn import params as param_specs


@dataclasses.dataclass
class Model:
  """A loaded model.

  Attributes:
    path: the checkpoint directory.
    config: the family config (frozen dataclass).
    hf_config: the HF config dict.
    params: the parameter pytree (jax arrays, sharded when loaded onto a mesh).
    family: the family module (`spec`, `forward`, `init_cache`, ...).
  """
  path: Path
  config: Any
  hf_config: dict
  params: Any
  family: Any

  @functools.cached_property
  def forward(self) -> Callable:
    """Pure `forward(params, **inputs, capture=(), patch=None, cache=None) -> Output` with
    HF-named inputs; jit it with `static_argnames="capture"`."""
    return functools.partial(self.family.forward, cfg=self.config)

  @functools.cached_property
  def processor(self):
    """The HF processor saved with the checkpoint. For vision models without torchvision
    (which transformers' video processors need), the same processor class built from the
    tokenizer and image processor, without a video processor (images only)."""
    from transformers import AutoProcessor
    try:
      return AutoProcessor.from_pretrained(str(self.path))
    except Exception as e:
      if "vision_config" not in self.hf_config or _has_torchvision():
        raise
      try:
        return _processor_without_video(self.path)
      except Exception as e2:
        raise e2 from e

  @property
  def tokenizer(self):
    return getattr(self.processor, "tokenizer", self.processor)

  def init_cache(self, batch: int, max_len: int, dtype=None) -> dict:
    dtype = dtype or jax.tree.leaves(self.params)[0].dtype
    return self.family.init_cache(self.config, batch, max_len, dtype)


def _has_torchvision() -> bool:
  try:
    import torchvision  # noqa: F401
  except Exception:
    return False
  return True


def _processor_without_video(path: Path):
  """The checkpoint's processor class (e.g. Qwen3VLProcessor) with its tokenizer, image
  processor and chat template, and no video processor."""
  import json

  import transformers
  from transformers import AutoImageProcessor, AutoTokenizer
  name = None
  for f in ("processor_config.json", "preprocessor_config.json"):
    if (path / f).is_file():
      name = json.loads((path / f).read_text()).get("processor_class") or name
  base = getattr(transformers, name) if name and hasattr(transformers, name) else None
  if base is None:
    raise ValueError(f"{path}: no processor class to build without a video processor (found {name!r})")

  class NoVideo(base):
    def check_argument_for_proper_class(self, argument_name, argument):
      if argument_name == "video_processor" and argument is None:
        return None
      return super().check_argument_for_proper_class(argument_name, argument)

  NoVideo.__name__ = NoVideo.__qualname__ = base.__name__
  tokenizer = AutoTokenizer.from_pretrained(str(path))
  return NoVideo(image_processor=AutoImageProcessor.from_pretrained(str(path)), tokenizer=tokenizer,
                 video_processor=None, chat_template=tokenizer.chat_template)


def load(path: str | Path, *, mesh: jax.sharding.Mesh | None = None, dtype: str | None = None,
         scan_layers: bool = True) -> Model:
  """Loads a jaxalm checkpoint directory (see `jaxalm convert`).

  Args:
    path: checkpoint directory.
    mesh: optional (data, fsdp, tensor) mesh; params are restored sharded onto it.
    dtype: cast floating params (e.g. "bfloat16"); default keeps the stored dtype.
    scan_layers: run layer stacks under `lax.scan` (False unrolls them).
  """
  path = Path(path)
  meta, hf_config = checkpoint.read_meta(path)
  family = registry.family(meta.get("model_type"), where=str(path / checkpoint.META))
  cfg = family.Config.from_hf(hf_config).replace(scan_layers=scan_layers)
  spec = family.spec(cfg)
  import orbax.checkpoint as ocp
  stored = ocp.StandardCheckpointer().metadata(path.absolute() / "params")
  stored_tree = getattr(stored, "item_metadata", stored)
  stored_tree = getattr(stored_tree, "tree", stored_tree)
  target = _target(spec, stored_tree, mesh)
  params = checkpoint.restore(path, target)
  if dtype is not None:
    params = jax.tree.map(lambda x: x.astype(jnp.dtype(dtype)) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
  return Model(path=path, config=cfg, hf_config=hf_config, params=params, family=family)


def _target(spec: Any, stored: Any, mesh):
  """ShapeDtypeStructs (with shardings) for the stored tree, checked against the spec."""
  shapes = param_specs.shapes(spec)
  want = {jax.tree_util.keystr(k): s for k, s in jax.tree_util.tree_leaves_with_path(shapes)}
  have = {jax.tree_util.keystr(k): s for k, s in jax.tree_util.tree_leaves_with_path(stored)}
  if set(want) != set(have):
    raise checkpoint.CheckpointError(
        f"checkpoint params do not match the config: missing {sorted(set(want) - set(have))}, "
        f"unexpected {sorted(set(have) - set(want))}")
  for k in want:
    if tuple(want[k].shape) != tuple(have[k].shape):
      raise checkpoint.CheckpointError(f"checkpoint param {k} has shape {tuple(have[k].shape)}, expected {want[k].shape}")
  if mesh is None:
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shard_tree = jax.tree.map(lambda _: dev, shapes)
  else:
    shard_tree = sharding.shardings(param_specs.logical_axes(spec), shapes, mesh)
  return jax.tree.map(lambda s, st, sh: jax.ShapeDtypeStruct(s.shape, st.dtype, sharding=sh), shapes,
                      _like(shapes, stored), shard_tree)


def _like(shapes, stored):
  """The stored metadata rearranged as the spec tree (dict order may differ)."""
  flat = {jax.tree_util.keystr(k): s for k, s in jax.tree_util.tree_leaves_with_path(stored)}
  return jax.tree_util.tree_map_with_path(lambda k, _: flat[jax.tree_util.keystr(k)], shapes)
