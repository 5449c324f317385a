"""`adapter.peft_config_path` (FIELDS A16): take the adapter's settings from a PEFT config file (an
`adapter_config.json` as PEFT saves it, or a folder holding one) instead of the form's fields.

The file is translated into the adapter section once, before the model loads, and the result is validated
like any config, so the run, training_args.json and every export see one set of values. PEFT's keys map to
the studio's own settings; any other key that differs from PEFT's default goes into adapter.network_args
when it is a plain value, and is refused by name otherwise (the studio could not honour it silently).
"""
from __future__ import annotations

import json
from pathlib import Path

from studio.config.errors import ConfigError

FIELD = "adapter.peft_config_path"
TYPES = {"LORA": "lora", "LOHA": "loha", "LOKR": "lokr", "OFT": "oft", "BOFT": "boft", "IA3": "ia3"}
# PEFT key -> studio adapter setting
SETTINGS = {"r": "rank", "oft_block_size": "rank", "boft_block_size": "rank", "lora_alpha": "alpha",
            "alpha": "alpha", "lora_dropout": "dropout", "rank_dropout": "rank_dropout",
            "module_dropout": "module_dropout", "boft_dropout": "module_dropout",
            "target_modules": "target_modules", "bias": "bias"}
# Bookkeeping that says nothing about the adapter's shape or training.
IGNORED = {"peft_type", "use_dora", "base_model_name_or_path", "revision", "task_type", "inference_mode",
           "auto_mapping", "peft_version", "feedforward_modules"}


def read_peft_config(path: str) -> dict:
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "adapter_config.json"
    if not file.is_file():
        raise ConfigError([(FIELD, f"not found: {file} (a PEFT adapter_config.json or its folder)")])
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError([(FIELD, f"{file} is not valid JSON: {err}")]) from None
    if not isinstance(data, dict) or data.get("peft_type") not in TYPES:
        raise ConfigError([(FIELD, f"{file}: peft_type must be one of {', '.join(TYPES)}, got "
                            f"{data.get('peft_type') if isinstance(data, dict) else data!r}")])
    return data


def adapter_settings(data: dict) -> dict:
    """The adapter section's values that the PEFT config sets."""
    from peft import PeftConfig

    defaults = PeftConfig.from_peft_type(peft_type=data["peft_type"]).to_dict()
    kind = TYPES[data["peft_type"]]
    out: dict = {"type": "dora" if kind == "lora" and data.get("use_dora") else kind, "backend": "peft"}
    extra, refused = [], []
    for key, value in data.items():
        if key in IGNORED or (key not in SETTINGS and value == defaults.get(key)):
            continue
        if key in SETTINGS:
            if key == "target_modules" and isinstance(value, str):
                refused.append(f"{key} (a regular expression; give a list of layer names)")
            elif value is not None and not (key == "r" and kind in ("oft", "boft")):
                out[SETTINGS[key]] = sorted(value) if isinstance(value, (list, set)) else value
        elif isinstance(value, (bool, int, float, str)) and " " not in str(value):
            extra.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
        else:
            refused.append(key)
    if refused:
        raise ConfigError([(FIELD, "PEFT settings the studio cannot apply: " + ", ".join(refused))])
    if extra:
        out["network_args"] = " ".join(extra)
    return out


def with_peft_config_file(cfg):
    """The job config with its adapter section taken from the PEFT file (unchanged when none is set)."""
    if not cfg.adapter.peft_config_path:
        return cfg
    from studio.config import validate

    data = cfg.model_dump(mode="json")
    data["adapter"].update(adapter_settings(read_peft_config(cfg.adapter.peft_config_path)))
    out = validate(data)
    out._notes.extend(cfg.notes)
    out._notes.append(f"adapter settings taken from {cfg.adapter.peft_config_path}: "
                      + ", ".join(f"{k}={data['adapter'][k]}" for k in ("type", "rank", "alpha")))
    return out
