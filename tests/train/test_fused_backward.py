"""optimizer.fused_backward_pass: each tensor steps inside backward and its gradient is freed there. Same
weights as the usual optimizer step, an exact resume from its per-tensor optimizer state, refusals named."""
from __future__ import annotations

import shutil

import pytest
import torch

from studio.config import ConfigError
from studio.runfolder import read_progress
from tests.train.fast_image import image_cfg

FULL = {"adapter": {"type": "full", "verify_exports": False}, "training": {"max_grad_norm": 0.0, "max_steps": 4,
                                                                             "learning_rate": 1e-3}}


def _weights(run):
    from safetensors.torch import load_file

    files = sorted(run.glob("*.safetensors")) + sorted(run.glob("unet/*.safetensors"))
    assert files, sorted(p.name for p in run.iterdir())
    return load_file(str(files[0]))


def _train(run, *extras):
    from studio.commands.train import run_training

    run.mkdir(exist_ok=True)
    cfg = image_cfg("sd15", FULL, {"job": {"output_dir": str(run)}}, *extras)
    assert run_training(cfg, run) == 0, read_progress(run)[0][-3:]
    return _weights(run)


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_fused_steps_end_with_the_weights_of_the_usual_step(tmp_path):
    usual = _train(tmp_path / "usual")
    fused = _train(tmp_path / "fused", {"optimizer": {"fused_backward_pass": True}})
    _assert_same(usual, fused)
    one = _train(tmp_path / "one", {"training": {"max_steps": 1}})
    assert any(not torch.equal(fused[k], one[k]) for k in fused)  # the weights move from step to step


@pytest.mark.slow
def test_fused_run_resumes_exactly_from_its_per_tensor_state(tmp_path):
    fused = {"optimizer": {"fused_backward_pass": True},
             "checkpointing": {"save_strategy": "steps", "save_steps": 2, "max_checkpoints": 3}}
    straight = _train(tmp_path / "straight", fused)
    run = tmp_path / "resumed"
    _train(run, fused)
    shutil.rmtree(run / "checkpoint-4")  # as if the run had died after its step-2 checkpoint
    state = torch.load(run / "checkpoint-2" / "optimizer.pt", weights_only=True)
    assert len(state["per_parameter"]) > 1 and all(s["state"] for s in state["per_parameter"])
    resumed = _train(run, fused, {"checkpointing": {"auto_resume": True}})
    records = [r for r in read_progress(run)[0] if r.get("event") == "resumed"]
    assert records and records[-1]["step"] == 2
    _assert_same(straight, resumed)


def test_fused_optimizer_steps_each_tensor_inside_backward():
    from studio.train.memory import FusedBackwardOptimizer

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    opt = FusedBackwardOptimizer([{"params": list(net.parameters()), "lr": 0.1}],
                                 lambda groups: torch.optim.SGD(groups))
    before = [p.detach().clone() for p in net.parameters()]
    net(torch.ones(2, 4)).sum().backward()
    assert all(p.grad is None for p in net.parameters())  # freed inside backward
    assert all(not torch.equal(a, p) for a, p in zip(before, net.parameters()))  # already stepped
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    opt.step()  # as the loop does: nothing left to step
    scheduler.step()
    assert all(inner.param_groups[0]["lr"] == pytest.approx(0.05) for inner in opt.inner)


@pytest.mark.parametrize("extra, text", [
    ({"training": {"gradient_accumulation_steps": 2}}, "gradient_accumulation_steps"),
    ({"training": {"max_grad_norm": 1.0}}, "max_grad_norm"),
    ({"optimizer": {"name": "adamw_schedulefree"}}, "schedule-free"),
    ({"distributed": {"num_processes": 2}}, "num_processes"),
])
def test_what_fused_steps_cannot_do_is_named(extra, text):
    with pytest.raises(ConfigError) as err:
        image_cfg("sd15", FULL, {"optimizer": {"fused_backward_pass": True}}, extra)
    assert text in err.value.by_field["optimizer.fused_backward_pass"]
