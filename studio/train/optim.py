"""Optimizers (catalogue in studio/train/optimizers.py) and learning-rate schedulers (FIELDS §6)."""
from __future__ import annotations

import math
from typing import Iterable

import torch

from studio.config.kv import parse_key_values
from studio.config.optimizers import spec
from studio.train.optimizers import make_optimizer, warmup_steps


def build_optimizer(params: Iterable, cfg, total_steps: int = 0) -> torch.optim.Optimizer:
    """`cfg` is the JobConfig. Params may be a list of tensors or of param-group dicts."""

    return make_optimizer(list(params), cfg, parse_key_values(cfg.optimizer.args), total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int):
    """diffusers' `get_scheduler` for the standard curves; cosine-with-min-LR and REX as a LambdaLR."""
    from diffusers.optimization import get_scheduler

    sch = cfg.scheduler
    # Schedule-free optimizers warm up themselves (studio/train/optimizers.py) under a constant LR.
    warm = 0 if spec(cfg.optimizer.name).schedule_free else warmup_steps(cfg, total_steps)
    if sch.name == "constant" and warm > 0:
        name = "constant_with_warmup"
    else:
        name = sch.name
    if name in CURVES:
        curve = CURVES[name](sch)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _with_warmup(warm, total_steps, curve))
    kwargs = {}
    if name == "cosine_with_restarts":
        # diffusers counts cosine arcs ("hard restarts" = 1 never restarts); the setting counts restarts.
        kwargs["num_cycles"] = sch.num_cycles + 1
    if name == "polynomial":
        kwargs.update(power=sch.power, lr_end=sch.lr_end)
    return get_scheduler(name, optimizer, num_warmup_steps=warm, num_training_steps=max(total_steps, 1),
                         **kwargs)


def _with_warmup(warm: int, total: int, curve):
    """Linear warmup, then `curve(progress)` with progress going 0 -> 1 over the remaining steps."""
    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / max(1, warm)
        return curve(min(1.0, (step - warm) / max(1, total - warm)))

    return factor


def _cosine_min_lr(sch):
    floor = sch.min_lr_ratio
    return lambda progress: floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _rex(sch):
    # REX, "Reflected Exponential" (Chen, Wolfe & Kyrillidis 2021, arXiv 2107.04197, eq. 3): the same
    # formula as pytorch-optimizer's REXScheduler, whose class sets one LR for every parameter group
    # (the text encoders have their own) and has no warmup, hence this LambdaLR factor.
    return lambda progress: (1.0 - progress) / (1.0 - progress / 2.0)


CURVES = {"cosine_with_min_lr": _cosine_min_lr, "rex": _rex}
