"""Adapters: one handle over whichever backend implements `adapter.type`.

The trainer only uses `AdapterHandle`: trainable parameters, state dict in/out, and save through the
family (which knows the ecosystem's file layout).
"""
from __future__ import annotations

from pathlib import Path

import torch


class AdapterHandle:
    def __init__(self, family, module: torch.nn.Module, config):
        self.family, self.module, self.config = family, module, config

    def trainable_params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def named_trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.module.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict[str, torch.Tensor]:
        from studio.adapters import peft_backend

        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in peft_backend.state_dict(self.module).items()}

    def load_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        from studio.adapters import peft_backend

        peft_backend.load_state_dict(self.module, weights)

    def save(self, out_dir: Path) -> None:
        self.family.save_adapter(Path(out_dir), self.state_dict(), self.config)


def inject_adapter(family, cfg) -> AdapterHandle:
    """Add the configured adapter to `family.trainable_module()`; trainable weights are fp32."""
    from studio.adapters import peft_backend

    module = family.trainable_module()
    targets = cfg.adapter.target_modules or family.default_targets()
    config = peft_backend.lora_config(cfg, targets)
    peft_backend.inject(module, config)
    for p in module.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    handle = AdapterHandle(family, module, config)
    if not handle.trainable_params():
        raise ValueError(f"adapter.target_modules: none of {targets} matched a layer of the model")
    if cfg.adapter.init_from:
        handle.load_state_dict(_read_adapter_file(cfg.adapter.init_from))
    return handle


def _read_adapter_file(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    file = Path(path)
    if file.is_dir():
        file = file / "adapter_model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"adapter.init_from: {path} not found")
    weights = load_file(str(file))
    # Files written by diffusers' save_lora_weights prefix the component ("unet."); PEFT's do not.
    return {k.split(".", 1)[1] if k.startswith(("unet.", "transformer.")) else k: v for k, v in weights.items()}
