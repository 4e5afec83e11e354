"""Run a stack of identical layers whose parameters are stacked on a leading axis."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def run_layers(layer_fn: Callable, x: jax.Array, xs: Any, *, scan: bool = True):
  """Applies `layer_fn(x, xs_l) -> (x, ys_l)` for every layer l.

  Args:
    layer_fn: one layer; `xs_l` is the l-th slice of every leaf of `xs`.
    x: the carried activation.
    xs: a pytree whose leaves have the layer count as leading axis (parameters, per-layer
      patch values and masks, per-layer cache slices).
    scan: run under `jax.lax.scan` (one compiled layer) or unrolled in Python.
  Returns:
    (x after the last layer, ys stacked on a leading layer axis).
  """
  if scan:
    return jax.lax.scan(layer_fn, x, xs)
  n = jax.tree.leaves(xs)[0].shape[0]
  ys = []
  for i in range(n):
    x, y = layer_fn(x, jax.tree.map(lambda a: a[i], xs))
    ys.append(y)
  return x, jax.tree.map(lambda *a: jnp.stack(a), *ys)
