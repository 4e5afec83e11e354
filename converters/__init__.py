"""HF safetensors -> jaxalm checkpoint converters, one name mapping per family."""

from jaxalm.converters.common import ConversionError, convert

__all__ = ["ConversionError", "convert"]
