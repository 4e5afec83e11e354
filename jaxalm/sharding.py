"""One logical-axis rules table mapping parameter/activation axis names to mesh axes.

Mesh axes: `data` (batch), `fsdp` (batch and parameter sharding), `tensor` (heads, MLP,
vocabulary). A dimension whose size the mesh axes do not divide is left replicated.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("layers", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("audio_embed", "fsdp"),
    ("audio_heads", "tensor"),
    ("audio_mlp", "tensor"),
    ("vision_embed", "fsdp"),
    ("vision_heads", "tensor"),
    ("vision_mlp", "tensor"),
)


def make_mesh(data: int = 1, fsdp: int | None = None, tensor: int = 1, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh; fsdp defaults to the devices left over."""
  devices = list(devices if devices is not None else jax.devices())
  if fsdp is None:
    fsdp = len(devices) // (data * tensor)
  n = data * fsdp * tensor
  if n != len(devices):
    raise ValueError(f"mesh {data}x{fsdp}x{tensor} needs {n} devices, have {len(devices)}")
  return Mesh(np.array(devices).reshape(data, fsdp, tensor), MESH_AXES)


def partition_spec(axes: tuple, shape: tuple[int, ...], mesh: Mesh, rules=RULES) -> PartitionSpec:
  """PartitionSpec for one array from its logical axis names."""
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name, size in zip(axes, shape):
    target = table.get(name) if name is not None else None
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    targets = tuple(t for t in targets if t not in used and mesh.shape[t] > 1)
    if targets and size % math.prod(mesh.shape[t] for t in targets) == 0:
      used.update(targets)
      out.append(targets[0] if len(targets) == 1 else targets)
    else:
      out.append(None)
  return PartitionSpec(*out)


def shardings(axes_tree: Any, shape_tree: Any, mesh: Mesh, rules=RULES) -> Any:
  """NamedSharding tree for a tree of logical axes and a matching tree of shaped arrays."""
  is_axes = lambda x: isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)
  return jax.tree.map(lambda ax, s: NamedSharding(mesh, partition_spec(ax, s.shape, mesh, rules)),
                      axes_tree, shape_tree, is_leaf=is_axes)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Sharding of an input whose leading axis is the batch."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))
