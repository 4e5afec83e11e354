"""Parameter specs: one declaration gives shapes, logical axes and random init."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class ParamSpec(NamedTuple):
  """A parameter's shape, its logical axis names (one per dim) and its init kind."""
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  init: str = "normal"  # normal | zeros | ones


def _is_spec(x) -> bool:
  return isinstance(x, ParamSpec)


def stacked(tree: Any, n: int) -> Any:
  """Adds a leading `layers` axis of size n to every spec of a layer."""
  return jax.tree.map(lambda s: ParamSpec((n, *s.shape), ("layers", *s.axes), s.init), tree,
                      is_leaf=_is_spec)


def shapes(spec: Any, dtype=jnp.float32) -> Any:
  """The ShapeDtypeStruct tree of a spec tree."""
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), spec, is_leaf=_is_spec)


def logical_axes(spec: Any) -> Any:
  """The tree of logical axis-name tuples of a spec tree."""
  return jax.tree.map(lambda s: s.axes, spec, is_leaf=_is_spec)


def init(spec: Any, key: jax.Array, dtype=jnp.float32, std: float = 0.02) -> Any:
  """Random parameters: normal(std) for weights, ones for scales, zeros for biases."""
  leaves, treedef = jax.tree.flatten(spec, is_leaf=_is_spec)
  keys = jax.random.split(key, len(leaves))
  out = []
  for k, s in zip(keys, leaves):
    if s.init == "zeros":
      out.append(jnp.zeros(s.shape, dtype))
    elif s.init == "ones":
      out.append(jnp.ones(s.shape, dtype))
    else:
      out.append((std * jax.random.normal(k, s.shape, jnp.float32)).astype(dtype))
  return jax.tree.unflatten(treedef, out)


def count(spec: Any) -> int:
  """Number of scalar parameters in a spec tree."""
  total = 0
  for s in jax.tree.leaves(spec, is_leaf=_is_spec):
    n = 1
    for d in s.shape:
      n *= d
    total += n
  return total
