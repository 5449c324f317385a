"""Exponential moving average of the trained weights (FIELDS O17-O20), on diffusers' `EMAModel`.

`training.ema_device=cpu` is SimpleTuner's `ema_cpu_only`: the average is kept in CPU memory and updated
there from a copy of the trained weights, so it never takes GPU memory, not even for the update
(`EMAModel.step` needs both on one device, hence the copy). `accelerator` keeps it beside the model.
"""
from __future__ import annotations

import torch


def build_ema(params: list[torch.Tensor], cfg):
    from diffusers.training_utils import EMAModel

    ema = EMAModel(params, decay=cfg.training.ema_decay)
    if cfg.training.ema_device == "cpu":
        ema.to("cpu")
    return ema


def ema_update(ema, params: list[torch.Tensor], on_cpu: bool) -> None:
    """One EMA step. On the CPU: the weights travel to the host (a few MB for an adapter), the average
    does not move. `requires_grad` is kept: EMAModel copies, rather than averages, frozen tensors."""
    if on_cpu:
        params = [p.detach().to("cpu").requires_grad_(p.requires_grad) for p in params]
    ema.step(params)
