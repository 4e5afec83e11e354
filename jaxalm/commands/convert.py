"""`jaxalm convert SRC DST`: a HF checkpoint directory -> a jaxalm checkpoint."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
  p = subparsers.add_parser("convert", help="convert a Hugging Face checkpoint directory (safetensors)")
  p.add_argument("src", help="HF checkpoint directory (config.json, *.safetensors, tokenizer/processor files)")
  p.add_argument("dst", help="output jaxalm checkpoint directory (written atomically)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                 help="cast floating weights (default: keep the stored dtype)")
  p.add_argument("--allow-pickle", action="store_true",
                 help="accept .bin pickle weights (they can execute code when loaded: only for trusted files)")
  p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
  p.set_defaults(func=run)


def run(args) -> int:
  from jaxalm.converters import ConversionError, convert
  from jaxalm.models.qwen2_audio import ConfigError
  try:
    dst = convert(args.src, args.dst, dtype=args.dtype, allow_pickle=args.allow_pickle, overwrite=args.overwrite)
  except (ConversionError, ConfigError, FileExistsError, ValueError) as e:
    print(f"jaxalm convert: error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {dst}")
  return 0
