"""Per-family starting values (FIELDS §22), merged under a config before validation.

Only values that differ from the schema defaults are listed; presets and users override them.
"""
from __future__ import annotations

import copy

_FAMILY_DEFAULTS: dict[str, dict] = {
    "sd15": {"data": {"resolution": 512}, "training": {"batch_size": 4}},
    "sdxl": {"data": {"resolution": 1024}, "training": {"batch_size": 4}},
    "sd3": {"data": {"resolution": 1024}, "training": {"batch_size": 4}},
    "flux": {"data": {"resolution": 1024}, "training": {"batch_size": 4}},
    "acestep": {"adapter": {"rank": 64, "alpha": 128, "dropout": 0.1},
                "training": {"learning_rate": 1e-4, "batch_size": 1, "gradient_accumulation_steps": 4,
                             "epochs": 100},
                "scheduler": {"warmup_steps": 100},
                "checkpointing": {"save_strategy": "epoch", "save_every_n_epochs": 10}},
    "causal_lm": {"adapter": {"rank": 16, "alpha": 16},
                  "training": {"learning_rate": 2e-4, "batch_size": 2, "gradient_accumulation_steps": 4,
                               "epochs": 2},
                  "scheduler": {"warmup_ratio": 0.1}},
}


def family_defaults(family: str) -> dict:
    return copy.deepcopy(_FAMILY_DEFAULTS.get(family, {}))
