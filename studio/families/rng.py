"""Random draws of a family's loss that do not depend on how the batch is split over processes, and how
they (and batches) reach the device."""
from __future__ import annotations

import torch


def draw(fn, *args, size: tuple, generator: torch.Generator, rank: int = 0, world: int = 1, **kwargs):
    """`fn(*args, size=..., generator=...)` (torch.randn / rand / randint) for the global batch, this
    rank's rows: with world=1 exactly the single-process draw."""
    size = tuple(size)
    full = fn(*args, size=(size[0] * world, *size[1:]), generator=generator, **kwargs)
    return full[rank * size[0]:(rank + 1) * size[0]]


def on_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`tensor.to(device, dtype)` without a host sync: a blocking copy to a CUDA GPU waits until the GPU has
    finished all queued work, so every step would stall there. From page-locked memory the copy is queued
    like a kernel instead (PyTorch keeps the pinned buffer alive until it is done). Same values."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device, dtype)
    return tensor.pin_memory().to(device, dtype, non_blocking=True)
