"""A small trained Qwen2-Audio model organism with a planted text-following mechanism."""
