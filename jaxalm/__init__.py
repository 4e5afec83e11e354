"""jaxalm: audio-language models in JAX/Flax for arbitration research."""

__version__ = "0.1.0"
