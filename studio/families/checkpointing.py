"""Gradient checkpointing of every Nth block (`memory.gradient_checkpointing_interval`), through the
diffusers models' own hook: `enable_gradient_checkpointing(func)` makes each block-running model call
`func(block, *inputs)` for every block of its stacks; this `func` recomputes only the blocks at positions
0, N, 2N, ... of their stack and runs the others plainly (their activations stay stored)."""
from __future__ import annotations

from typing import Callable

import torch


def every_nth_block(model: torch.nn.Module, interval: int) -> Callable | None:
    """The checkpointing function for `model` (None = diffusers' default: every block)."""
    if interval <= 1:
        return None
    position: dict[int, int] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList):
            for index, block in enumerate(module):
                position.setdefault(id(block), index)

    def checkpoint_some(block: torch.nn.Module, *args):
        if position.get(id(block), 0) % interval:
            return block(*args)
        return torch.utils.checkpoint.checkpoint(block.__call__, *args, use_reentrant=False)

    return checkpoint_some
