"""Random draws of a family's loss that do not depend on how the batch is split over processes."""
from __future__ import annotations

import torch


def draw(fn, *args, size: tuple, generator: torch.Generator, rank: int = 0, world: int = 1, **kwargs):
    """`fn(*args, size=..., generator=...)` (torch.randn / rand / randint) for the global batch, this
    rank's rows: with world=1 exactly the single-process draw."""
    size = tuple(size)
    full = fn(*args, size=(size[0] * world, *size[1:]), generator=generator, **kwargs)
    return full[rank * size[0]:(rank + 1) * size[0]]
