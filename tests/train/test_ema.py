"""`training.ema_device` (FIELDS O18/O19): `cpu` keeps the average on the CPU and updates it there."""
from __future__ import annotations

import pytest
import torch

from studio.config import load_config
from studio.train.ema import build_ema, ema_update

BASE = {"model": {"path": "tiny:sd15"}, "data": {"path": "demo:images"}}


def _ema_run(device: str, ema_device: str):
    cfg = load_config(BASE, ["training.use_ema=true", "training.ema_decay=0.5", f"training.ema_device={ema_device}"])
    p = torch.nn.Parameter(torch.zeros(3, device=device))
    ema = build_ema([p], cfg)
    seen = []
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            p.fill_(value)
        ema_update(ema, [p], on_cpu=ema_device == "cpu")
        seen.append({s.device.type for s in ema.shadow_params})
    return ema, seen


def test_cpu_ema_averages_the_trained_weights():
    ema, seen = _ema_run("cpu", "cpu")
    # diffusers' EMAModel.get_decay: 0 at the first update, then min(decay, (1 + k) / (10 + k))
    expected = 0.0
    for k, value in enumerate((1.0, 2.0, 3.0)):
        decay = 0.0 if k == 0 else min(0.5, (1 + k) / (10 + k))
        expected = decay * expected + (1 - decay) * value
    assert 2.0 < expected < 3.0  # an average, not the last value
    assert torch.allclose(ema.shadow_params[0], torch.full((3,), expected))
    assert seen == [{"cpu"}] * 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_ema_never_moves_to_the_gpu():
    # Before the fix the loop moved the EMA to the GPU for every update and back afterwards.
    moved = []
    ema, seen = _ema_run("cuda", "cpu")
    original_to = ema.to
    ema.to = lambda *a, **k: (moved.append((a, k)), original_to(*a, **k))[1]
    p = torch.nn.Parameter(torch.ones(3, device="cuda"))
    ema_update(ema, [p], on_cpu=True)
    assert not moved and seen == [{"cpu"}] * 3 and ema.shadow_params[0].device.type == "cpu"
    ema_gpu, seen_gpu = _ema_run("cuda", "accelerator")
    assert seen_gpu == [{"cuda"}] * 3
