"""jaxalm: audio-language models in JAX/Flax for arbitration research."""

__version__ = "0.1.0"

from jaxalm.loader import Model, load  # noqa: E402

__all__ = ["Model", "load", "__version__"]
