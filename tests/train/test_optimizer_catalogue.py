"""Every optimizer of the catalogue and the REX schedule train the tiny SD 1.5 preset: a few steps on one
fixed batch (fixed noise and timesteps) lower its loss. The model is loaded once; each case resets the
adapter. CUDA-only (bitsandbytes) optimizers must refuse a CPU-only machine with a clear message."""
from __future__ import annotations

import pytest
import torch

from studio.config import load_config
from studio.config.optimizers import CATALOGUE
from studio.train.optim import build_optimizer, build_scheduler
from studio.train.optimizers import evaluation_weights, set_train_mode
from tests.conftest import REPO

PRESET = str(REPO / "presets/tiny-sd15-lora.json")
STEPS = 4
# RAdam's variance rectification makes no adaptive step for the first ~5 steps (Liu et al. 2019,
# arXiv 1908.03265), and Ranger's lookahead syncs every 6: they get 8.
LONGER = {"ranger": 8, "radam_schedulefree": 8}
# D-Adaptation SGD grows its step from d0 (1e-6 by default), too slowly to show within a few steps.
ARGS = {"dadapt_sgd": "d0=1e-4"}
CPU_OPTIMIZERS = [n for n, s in CATALOGUE.items() if not s.cuda]
CUDA_OPTIMIZERS = [n for n, s in CATALOGUE.items() if s.cuda]
CASES = [(n, "constant") for n in CPU_OPTIMIZERS] + [("adamw", "rex")]
# Step sizes that move the tiny model in a few steps: sign-based Lion needs a smaller one, the
# step-size-free ones take 1.0 (their multiplier) and schedule-free ones a larger one (their warm start).
LR = {"lion": 3e-4, "sgd": 0.05, "sgd_nesterov": 0.05, "sgd_schedulefree": 0.5}


@pytest.fixture(scope="module")
def tiny():
    from studio.adapters import inject_adapter
    from studio.families.base import build_family

    cfg = load_config(PRESET)
    family = build_family(cfg, torch.device("cpu"), torch.float32)
    family.load()
    handle = inject_adapter(family, cfg)
    start = {k: v.detach().clone() for k, v in handle.state_dict().items()}
    dataset = family.train_dataset()
    batch = family.collate([dataset[i] for i in range(4)])
    family.trainable_module().train()
    return family, handle, start, batch


def _loss(family, batch):
    return family.loss(batch, torch.Generator().manual_seed(1234))


@pytest.mark.parametrize("name,scheduler", CASES)
def test_a_few_steps_lower_the_loss(tiny, name, scheduler):
    family, handle, start, batch = tiny
    handle.load_state_dict(start)
    lr = 1.0 if CATALOGUE[name].lr_free else LR.get(name, 1e-3)
    cfg = load_config(PRESET, [f"optimizer.name={name}", f"scheduler.name={scheduler}",
                               f"training.learning_rate={lr}", "optimizer.weight_decay=0",
                               f"optimizer.args={ARGS.get(name, '')}"])
    steps = LONGER.get(name, STEPS)
    optimizer = build_optimizer(handle.param_groups(lr), cfg, steps)
    schedule = build_scheduler(optimizer, cfg, steps)
    with torch.no_grad():
        before = float(_loss(family, batch))
    set_train_mode(optimizer, True)
    for _ in range(steps):
        _loss(family, batch).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    with evaluation_weights(optimizer), torch.no_grad():
        after = float(_loss(family, batch))
    assert after < before, (name, before, after)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
@pytest.mark.parametrize("name", CUDA_OPTIMIZERS)
def test_cuda_only_optimizers_say_why_on_cpu(name):
    cfg = load_config(PRESET, [f"optimizer.name={name}"])
    with pytest.raises(RuntimeError, match=f"'{name}' needs bitsandbytes on a CUDA GPU"):
        build_optimizer([torch.nn.Parameter(torch.ones(2))], cfg)


def test_schedule_free_samples_and_saves_its_average_without_disturbing_training(tiny):
    family, handle, start, batch = tiny

    def train(peek: bool):
        handle.load_state_dict(start)
        cfg = load_config(PRESET, ["optimizer.name=adamw_schedulefree", "training.learning_rate=1e-3"])
        optimizer = build_optimizer(handle.param_groups(1e-3), cfg, 6)
        set_train_mode(optimizer, True)
        averaged = current = None
        for step in range(6):
            _loss(family, batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if peek and step == 2:  # what the loop does around a sample or a checkpoint
                current = {k: v.clone() for k, v in handle.state_dict().items()}
                with evaluation_weights(optimizer):
                    averaged = {k: v.clone() for k, v in handle.state_dict().items()}
        return {k: v.clone() for k, v in handle.state_dict().items()}, averaged, current

    plain, _, _ = train(peek=False)
    peeked, averaged, current = train(peek=True)
    assert all(torch.allclose(plain[k], peeked[k], atol=1e-6) for k in plain)  # training went on unchanged
    trained = [k for k in averaged if not torch.equal(current[k], start[k])]
    assert trained and any(not torch.allclose(averaged[k], current[k]) for k in trained)  # the average


def test_foreach_and_fused_updates_match_the_default_one(tiny):
    """optimizer.implementation reaches torch's AdamW (fused runs on a CPU too) and gives the same weights."""
    family, handle, start, batch = tiny
    results = {}
    for choice in ("auto", "foreach", "fused"):
        handle.load_state_dict(start)
        cfg = load_config(PRESET, ["training.learning_rate=1e-3", f"optimizer.implementation={choice}"])
        optimizer = build_optimizer(handle.param_groups(1e-3), cfg, 3)
        assert optimizer.defaults.get(choice, True) is True  # `fused=True` / `foreach=True` was passed
        for _ in range(3):
            _loss(family, batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        results[choice] = {k: v.detach().clone() for k, v in handle.state_dict().items()}
    assert any(not torch.equal(results["auto"][k], start[k]) for k in start)
    for choice in ("foreach", "fused"):
        for key, value in results["auto"].items():
            torch.testing.assert_close(results[choice][key], value, rtol=1e-5, atol=1e-6)
    cfg = load_config(PRESET, ["optimizer.name=came", "optimizer.implementation=fused"])
    with pytest.raises(ValueError, match="optimizer.implementation: 'came' has no fused form"):
        build_optimizer([torch.nn.Parameter(torch.ones(2))], cfg)
