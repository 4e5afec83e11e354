"""Qwen3-VL key names. Checkpoints on the hub and transformers 5's save_pretrained both use
`model.visual.X`, `model.language_model.X` and `lm_head` (absent when tied). The vision
blocks `visual.blocks.<i>` become the stacked `visual/layers`."""

RENAMES = (
    ("model.visual.blocks.", "visual.layers."),
)
STRIP = ("model.",)
IGNORE = ()
