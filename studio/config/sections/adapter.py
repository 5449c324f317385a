"""`adapter` section (FIELDS §4)."""
from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from studio.config.fields import Section, setting

AdapterType = Literal["lora"]


class AdapterSection(Section):
    type: AdapterType = setting("lora", "Adapter method. LoRA adds small low-rank matrices next to the "
                                "chosen layers: small files, loads everywhere.")
    rank: int = setting(16, "Adapter capacity (LoRA `r`). Higher learns more detail but gives bigger "
                        "files and more memory. 8-32 is typical for a character or style.", ge=1, le=1024)
    alpha: float = setting(16, "Scale of the adapter update; the effective strength is alpha / rank. "
                           "alpha = rank gives a scale of 1.", gt=0, le=4096)
    dropout: float = setting(0.0, "Randomly zero this share of adapter activations while training, "
                             "to curb memorising small datasets. 0 = off.", ge=0.0, lt=1.0, step=0.01)
    target_modules: list[str] = setting(
        None, "Layer names to adapt (e.g. `to_q to_k to_v to_out.0`). Empty = the family's usual "
        "attention projections. A space- or comma-separated string is accepted.",
        default_factory=list, group="advanced")
    init_from: str = setting("", "Start from an existing adapter file (.safetensors) instead of a fresh "
                             "one, to keep refining it.", group="advanced", widget="path")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split_string(cls, value):
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value
