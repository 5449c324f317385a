"""Optimizers and learning-rate schedulers (FIELDS §6), built from the config by name."""
from __future__ import annotations

import math
from typing import Iterable

import torch

from studio.config.kv import parse_key_values


def build_optimizer(params: Iterable, cfg) -> torch.optim.Optimizer:
    """`cfg` is the JobConfig. Params may be a list of tensors or of param-group dicts."""
    name, opt = cfg.optimizer.name, cfg.optimizer
    lr, wd = cfg.training.learning_rate, opt.weight_decay
    extra = parse_key_values(opt.args)
    betas = {}
    if opt.beta1 is not None or opt.beta2 is not None:
        betas["betas"] = (opt.beta1 if opt.beta1 is not None else 0.9,
                          opt.beta2 if opt.beta2 is not None else 0.999)
    eps = {"eps": opt.eps} if opt.eps is not None else {}
    params = list(params)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **betas, **eps, **extra)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, **{"momentum": 0.0, **extra})
    if name == "sgd_nesterov":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, nesterov=True, **{"momentum": 0.9, **extra})
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # An explicit LR needs relative_step/scale_parameter off (transformers' documented setting).
        kw = {"scale_parameter": False, "relative_step": False, "warmup_init": False, **extra}
        return Adafactor(params, lr=lr, weight_decay=wd, **kw)
    if name == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(params, lr=lr, weight_decay=wd, **betas, **eps, **extra)
    if name == "lion":
        from lion_pytorch import Lion

        return Lion(params, lr=lr, weight_decay=wd, **betas, **extra)
    return _bitsandbytes_optimizer(name, params, lr, wd, {**betas, **eps, **extra})


def _bitsandbytes_optimizer(name: str, params, lr: float, wd: float, kw: dict) -> torch.optim.Optimizer:
    if not torch.cuda.is_available():
        raise RuntimeError(f"optimizer.name '{name}' needs bitsandbytes on a CUDA GPU; none is available "
                           "here. Use 'adamw' or 'adafactor' on this machine.")
    import bitsandbytes as bnb

    classes = {"adamw8bit": bnb.optim.AdamW8bit, "paged_adamw8bit": bnb.optim.PagedAdamW8bit,
               "paged_adamw": bnb.optim.PagedAdamW, "lion8bit": bnb.optim.Lion8bit}
    return classes[name](params, lr=lr, weight_decay=wd, **kw)


def warmup_steps(cfg, total_steps: int) -> int:
    """Warmup steps win over the ratio (FIELDS T07/T08)."""
    if cfg.scheduler.warmup_steps > 0:
        return cfg.scheduler.warmup_steps
    return int(math.ceil(cfg.scheduler.warmup_ratio * total_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int):
    """diffusers' `get_scheduler` for the standard curves; cosine-with-min-LR as a LambdaLR."""
    from diffusers.optimization import get_scheduler

    sch = cfg.scheduler
    warm = warmup_steps(cfg, total_steps)
    if sch.name == "constant" and warm > 0:
        name = "constant_with_warmup"
    else:
        name = sch.name
    if name == "cosine_with_min_lr":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_min_lr(warm, total_steps, sch.min_lr_ratio))
    kwargs = {}
    if name == "cosine_with_restarts":
        # diffusers counts cosine arcs ("hard restarts" = 1 never restarts); the setting counts restarts.
        kwargs["num_cycles"] = sch.num_cycles + 1
    if name == "polynomial":
        kwargs.update(power=sch.power, lr_end=sch.lr_end)
    return get_scheduler(name, optimizer, num_warmup_steps=warm, num_training_steps=max(total_steps, 1),
                         **kwargs)


def _cosine_min_lr(warm: int, total: int, floor: float):
    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / max(1, warm)
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
