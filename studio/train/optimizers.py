"""Build the chosen optimizer from the catalogue (studio/config/optimizers.py) with the studio's settings
mapped onto the class's own arguments, and switch schedule-free optimizers between their two weights.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager

import torch

from studio.config.optimizers import CATALOGUE, Spec, spec


def _betas(cls: type, opt) -> dict:
    """beta1/beta2 overrides; a third beta (AdEMAMix, Adan) keeps the class's default."""
    if opt.beta1 is None and opt.beta2 is None:
        return {}
    default = inspect.signature(cls).parameters.get("betas")
    if default is None:
        raise ValueError(f"optimizer.beta1/beta2: '{opt.name}' has no betas; leave them empty")
    betas = list(default.default)
    for i, value in enumerate((opt.beta1, opt.beta2)):
        if value is not None:
            betas[i] = value
    return {"betas": tuple(betas)}


def _decay_mode(name: str, s: Spec, choice: str) -> dict:
    """optimizer.decouple_weight_decay: `default` keeps the optimizer's own rule; `decoupled` (AdamW-style,
    Loshchilov & Hutter, arXiv 1711.05101) or `coupled` (L2 added to the gradient) are passed to the
    class's own switch, and refused where the class has only one kind."""
    if choice == "default":
        return {}
    want = choice == "decoupled"
    if s.switch:
        return {s.switch: want}
    if s.decoupled == want:
        return {}
    able = sorted(n for n, x in CATALOGUE.items() if x.switch)
    raise ValueError(f"optimizer.decouple_weight_decay: '{name}' always applies {'decoupled' if s.decoupled else 'coupled'} "
                     f"weight decay; '{choice}' is available with: {', '.join(able)}")


def make_optimizer(params: list, cfg, extra: dict, total_steps: int) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    s = spec(opt.name)
    if s.cuda and not torch.cuda.is_available():
        raise RuntimeError(f"optimizer.name '{opt.name}' needs bitsandbytes on a CUDA GPU; none is available "
                           "here. Use 'adamw' or 'adafactor' on this machine.")
    cls = s.load()
    kwargs = {**s.defaults, **_betas(cls, opt), **_decay_mode(opt.name, s, opt.decouple_weight_decay)}
    if opt.implementation != "auto":
        if opt.implementation not in inspect.signature(cls).parameters:
            raise ValueError(f"optimizer.implementation: '{opt.name}' has no {opt.implementation} form; leave it "
                             "'auto' (PyTorch's own optimizers such as adamw, adam and sgd_nesterov have one)")
        kwargs[opt.implementation] = True
    if opt.eps is not None:
        if "eps" not in inspect.signature(cls).parameters:
            raise ValueError(f"optimizer.eps: '{opt.name}' has no epsilon; leave it empty")
        kwargs["eps"] = opt.eps
    if s.schedule_free and "warmup_steps" in inspect.signature(cls).parameters:
        # The schedule-free method warms up itself instead of an LR schedule (RAdam's needs none).
        kwargs["warmup_steps"] = warmup_steps(cfg, total_steps)
    return cls(params, lr=cfg.training.learning_rate, weight_decay=opt.weight_decay, **{**kwargs, **extra})


def set_train_mode(optimizer, train: bool) -> None:
    """Schedule-free optimizers train on one sequence of weights and evaluate on another (their average);
    they must be told which one the model should hold (schedulefree README). No-op for the others."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if "train_mode" in inner.param_groups[0]:
        inner.train() if train else inner.eval()


@contextmanager
def evaluation_weights(optimizer):
    """The weights to sample, evaluate or save: the schedule-free average, back to training after."""
    set_train_mode(optimizer, False)
    try:
        yield
    finally:
        set_train_mode(optimizer, True)


def warmup_steps(cfg, total_steps: int) -> int:
    """Warmup steps win over the ratio (FIELDS T07/T08)."""
    if cfg.scheduler.warmup_steps > 0:
        return cfg.scheduler.warmup_steps
    return int(math.ceil(cfg.scheduler.warmup_ratio * total_steps))
