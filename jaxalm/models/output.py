"""The output every family's forward returns."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class Output:
  """logits [B, S, V] float32; captures {site: array}; cache (or None) after this call."""
  logits: jax.Array
  captures: dict[str, jax.Array]
  cache: Any = None
