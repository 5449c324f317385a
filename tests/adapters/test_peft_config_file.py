"""`adapter.peft_config_path` (FIELDS A16): a PEFT adapter_config.json replaces the adapter fields."""
from __future__ import annotations

import pytest
import torch
from peft import LoHaConfig, LoraConfig

from studio.adapters.peft_file import with_peft_config_file
from studio.config import ConfigError, load_config
from tests.conftest import REPO

PRESET = str(REPO / "presets/tiny-sd15-lora.json")


def _cfg(path):
    return load_config(PRESET, [f"adapter.peft_config_path={path}"])


def test_a_peft_file_sets_the_adapter_and_is_injected(tmp_path):
    from studio.adapters import inject_adapter
    from studio.families.base import build_family

    LoraConfig(r=8, lora_alpha=4, lora_dropout=0.1, target_modules=["to_q", "to_v"], use_rslora=True,
               use_dora=True).save_pretrained(str(tmp_path))
    cfg = with_peft_config_file(_cfg(tmp_path))
    a = cfg.adapter
    assert (a.type, a.rank, a.alpha, a.dropout, a.target_modules) == ("dora", 8, 4, 0.1, ["to_q", "to_v"])
    assert a.network_args == "use_rslora=true" and any("adapter settings taken from" in n for n in cfg.notes)
    family = build_family(cfg, torch.device("cpu"), torch.float32)
    family.load()
    handle = inject_adapter(family, cfg)
    injected = handle.config
    injected = next(iter(injected.values())) if isinstance(injected, dict) else injected
    assert injected.r == 8 and injected.use_rslora and injected.use_dora
    assert all(any(t in name for t in ("to_q", "to_v")) for name in handle.named_trainable())


def test_other_methods_and_file_errors(tmp_path):
    LoHaConfig(r=4, alpha=2, target_modules=["to_k"]).save_pretrained(str(tmp_path / "loha"))
    a = with_peft_config_file(_cfg(tmp_path / "loha" / "adapter_config.json")).adapter
    assert (a.type, a.rank, a.alpha, a.target_modules) == ("loha", 4, 2, ["to_k"])
    LoraConfig(r=4, target_modules=["to_q"], layers_to_transform=[0]).save_pretrained(str(tmp_path / "layers"))
    with pytest.raises(ConfigError, match="layers_to_transform"):
        with_peft_config_file(_cfg(tmp_path / "layers"))
    with pytest.raises(ConfigError, match="adapter.peft_config_path"):
        with_peft_config_file(_cfg(tmp_path / "nowhere"))
    (tmp_path / "bad.json").write_text('{"peft_type": "PROMPT_TUNING"}')
    with pytest.raises(ConfigError, match="peft_type"):
        with_peft_config_file(_cfg(tmp_path / "bad.json"))
