"""Qwen2-Audio key names: transformers 5 (`model.language_model.X`) and the legacy names
that checkpoints published on the hub use (`language_model.model.X`)."""

RENAMES = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("audio_tower.", "model.audio_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)
STRIP = ("model.",)
IGNORE = ()
