import math

import pytest
import torch

from studio.config import load_config
from studio.train.optim import build_optimizer, build_scheduler, warmup_steps

BASE = {"model": {"path": "tiny:sd15"}, "data": {"path": "demo:images"}}


@pytest.mark.parametrize("name", ["adamw", "adafactor", "prodigy", "lion", "sgd", "sgd_nesterov"])
def test_cpu_optimizers_build_and_step(name):
    lr = 1.0 if name == "prodigy" else 1e-3  # Prodigy's first step is lr * d0 (1e-6)
    cfg = load_config(BASE, [f"optimizer.name={name}", f"training.learning_rate={lr}"])
    p = torch.nn.Parameter(torch.ones(4))
    opt = build_optimizer([p], cfg)
    p.grad = torch.ones(4)
    opt.step()
    assert not torch.equal(p.detach(), torch.ones(4))


def _lrs(cfg, total=100):
    p = torch.nn.Parameter(torch.ones(1))
    opt = build_optimizer([p], cfg)
    sched = build_scheduler(opt, cfg, total)
    out = []
    for _ in range(total):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_warmup_steps_win_over_ratio():
    cfg = load_config(BASE, ["scheduler.warmup_steps=5", "scheduler.warmup_ratio=0.5"])
    assert warmup_steps(cfg, 100) == 5
    assert warmup_steps(load_config(BASE, ["scheduler.warmup_ratio=0.1"]), 100) == 10


def test_schedules_have_their_shape():
    lr = 1e-3
    cosine = _lrs(load_config(BASE, ["scheduler.name=cosine", f"training.learning_rate={lr}"]))
    assert cosine[0] == pytest.approx(lr) and cosine[-1] < 0.01 * lr
    floor = _lrs(load_config(BASE, ["scheduler.name=cosine_with_min_lr", "scheduler.min_lr_ratio=0.2",
                                    f"training.learning_rate={lr}"]))
    assert min(floor) >= 0.2 * lr - 1e-12
    warm = _lrs(load_config(BASE, ["scheduler.name=constant", "scheduler.warmup_steps=10",
                                   f"training.learning_rate={lr}"]))
    assert warm[0] < lr and math.isclose(warm[50], lr)


def _jumps(lrs):
    return sum(1 for a, b in zip(lrs, lrs[1:]) if b > a * 2)


@pytest.mark.parametrize("restarts", [0, 1, 3])
def test_num_cycles_counts_restarts(restarts):
    # The help promises "the LR jumps back up this many times" (FIELDS O13); diffusers counts arcs.
    lrs = _lrs(load_config(BASE, ["scheduler.name=cosine_with_restarts", f"scheduler.num_cycles={restarts}"]))
    assert _jumps(lrs) == restarts


def test_restarts_default_restarts():
    cfg = load_config(BASE, ["scheduler.name=cosine_with_restarts"])
    assert cfg.scheduler.num_cycles == 2 and _jumps(_lrs(cfg)) == 2


def test_rex_keeps_the_lr_up_longer_than_linear_then_ends_at_zero():
    lr = 1e-3
    rex = _lrs(load_config(BASE, ["scheduler.name=rex", f"training.learning_rate={lr}"]))
    linear = _lrs(load_config(BASE, ["scheduler.name=linear", f"training.learning_rate={lr}"]))
    assert rex[0] == pytest.approx(lr) and rex[50] == pytest.approx(lr * 0.5 / 0.75)  # (1 - p) / (1 - p / 2)
    assert all(r >= l for r, l in zip(rex, linear)) and rex[-1] < 0.03 * lr


def test_decoupled_weight_decay_is_passed_or_refused():
    cfg = load_config(BASE, ["optimizer.name=came", "optimizer.decouple_weight_decay=coupled"])
    opt = build_optimizer([torch.nn.Parameter(torch.ones(2))], cfg)
    assert opt.param_groups[0]["weight_decouple"] is False
    cfg = load_config(BASE, ["optimizer.name=adam", "optimizer.decouple_weight_decay=decoupled"])
    assert build_optimizer([torch.nn.Parameter(torch.ones(2))], cfg).param_groups[0]["decoupled_weight_decay"]
    cfg = load_config(BASE, ["optimizer.name=sgd", "optimizer.decouple_weight_decay=decoupled"])
    with pytest.raises(ValueError, match="decouple_weight_decay.*'sgd'"):
        build_optimizer([torch.nn.Parameter(torch.ones(2))], cfg)


def test_schedule_free_forces_a_constant_schedule():
    cfg = load_config(BASE, ["optimizer.name=adamw_schedulefree", "scheduler.name=cosine",
                             "scheduler.warmup_steps=5"])
    assert cfg.scheduler.name == "constant" and any("schedule" in n for n in cfg.notes)
    p = torch.nn.Parameter(torch.ones(1))
    opt = build_optimizer([p], cfg, 100)
    assert opt.param_groups[0]["warmup_steps"] == 5  # the optimizer warms up, the scheduler stays flat
    sched = build_scheduler(opt, cfg, 100)
    assert sched.get_last_lr()[0] == pytest.approx(cfg.training.learning_rate)
