"""Adapters on the tiny SD 1.5 model: build a family + adapter from a few settings, take real steps."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The tiny model's matmuls are microseconds; with several threads on a shared 2-core box they wait
    # on each other for milliseconds (100x slower).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def sd15_config(tmp_path: Path, adapter: dict, **sections):
    from studio.config import finalize_job, load_config

    data = {"model": {"family": "sd15", "path": "tiny:sd15"},
            "data": {"path": "demo:images", "resolution": 64, "cache_mode": "off"},
            "adapter": {"rank": 4, "alpha": 8, **adapter},
            "job": {"name": "tiny_" + adapter.get("type", "lora"), "output_dir": str(tmp_path / "run")}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return finalize_job(load_config(data, []))


def build(cfg):
    """Family loaded on the CPU in fp32, with the configured adapter injected."""
    from studio.adapters import inject_adapter
    from studio.families.base import build_family

    family = build_family(cfg, torch.device("cpu"), torch.float32)
    family.load()
    return family, inject_adapter(family, cfg)


def train_step(family, handle, lr: float = 1e-2, steps: int = 1) -> None:
    """Real optimizer steps on the family's own loss (noise, timesteps, text encoding included)."""
    optimizer = torch.optim.AdamW(handle.param_groups(lr), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    batch = {"latents": torch.randn(2, 4, 8, 8, generator=gen), "caption": ["a red circle", "a blue square"]}
    for net in handle.components.values():
        net.train()
    for _ in range(steps):
        loss = family.loss(batch, gen)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def output(family, handle) -> torch.Tensor:
    """The family's fixed-input output of the adapted model (eval mode)."""
    with handle.eval_mode():
        return family.verification_forward(handle.components, family.verification_inputs(), family.dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()
