"""PEFT backend: inject a LoRA into the family's trainable module, read and write its weights."""
from __future__ import annotations

import torch


def lora_config(cfg, targets: list[str]):
    from peft import LoraConfig

    a = cfg.adapter
    # Gaussian init of A (B is zero) as diffusers' LoRA examples: the model starts unchanged.
    return LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=targets,
                      init_lora_weights="gaussian")


def inject(module: torch.nn.Module, config) -> None:
    if hasattr(module, "add_adapter"):  # diffusers models (and transformers) carry PEFT's mixin
        module.add_adapter(config)
    else:
        from peft import inject_adapter_in_model

        inject_adapter_in_model(config, module)


def state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(module)


def load_state_dict(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(module, weights)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"adapter weights do not match this model: {len(unexpected)} unexpected keys, "
                         f"e.g. {unexpected[:3]}")
