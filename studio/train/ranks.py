"""What changes when a job runs on several processes (DDP through accelerate; studio/distributed.py).

The rule that makes N processes x batch b train exactly like 1 process x batch N*b:
- every step has one *global* batch of N*b items (the samplers are built with the global size, so
  buckets and the data order are those of the single-process run) and rank r takes its contiguous
  slice r*b:(r+1)*b (`RankSlices`);
- every random draw of the loss (noise, timesteps, dropout) is made for the global batch from the
  same seeded generator on every rank, and rank r keeps its rows (`draw`);
- the loss runs through the DDP-wrapped `LossModule`, so gradients are averaged over ranks.
Only the main process writes the run folder; decisions (stop, save, sample, non-finite loss) are
taken once and shared (`shared_flags`, `mean_over_ranks`).
"""
from __future__ import annotations

import os

import torch


def process_rank() -> int:
    """Global rank from the launcher's environment (0 outside a launch), usable before accelerate."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return process_rank() == 0


class RankSlices(torch.utils.data.Sampler):
    """This rank's contiguous slice of each global batch of `batch_sampler`.

    Training (`pad=True`): a last, smaller batch is first filled up with its own first items (as
    accelerate's `even_batches` does) so every rank takes part in every step; accelerate's
    `BatchSamplerShard` needs one fixed batch size, which bucketed batches do not have.
    Evaluation (`pad=False`): no item counts twice; a rank whose slice is empty skips that batch.
    """

    def __init__(self, batch_sampler, rank: int, world: int, pad: bool = True):
        self.batch_sampler, self.rank, self.world, self.pad = batch_sampler, rank, world, pad

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        for batch in self.batch_sampler:
            batch = list(batch)
            if self.pad:
                batch += [batch[i % len(batch)] for i in range(-len(batch) % self.world)]
            size = -(-len(batch) // self.world)
            mine = batch[self.rank * size:(self.rank + 1) * size]
            if mine:
                yield mine


class LossModule(torch.nn.Module):
    """Every network that carries trainable weights, with the family's loss as its forward.

    accelerate wraps *this* module (DDP, FSDP2, DeepSpeed), so the wrapper sees every trainable
    parameter (text encoders and LyCORIS networks included) and its forward hooks run around the
    whole loss computation, which is what gradient averaging needs.
    """

    def __init__(self, family, networks: list[torch.nn.Module]):
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)
        object.__setattr__(self, "_family", family)  # not a submodule: the family is no nn.Module
        # FSDP2's transformer-based wrap policy reads this to find the blocks to shard.
        self._no_split_modules = sorted({name for net in networks for name in getattr(net, "_no_split_modules", None) or []})

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return self._family.loss(batch, generator)


def shared_flags(accelerator, flags: list[bool]) -> list[bool]:
    """The main process's flags on every rank (one small broadcast; none on a single process)."""
    if accelerator.num_processes == 1:
        return flags
    from accelerate.utils import broadcast

    tensor = torch.tensor([int(f) for f in flags], device=accelerator.device)
    return [bool(v) for v in broadcast(tensor, from_process=0).tolist()]


def mean_over_ranks(accelerator, value: torch.Tensor) -> torch.Tensor:
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(value.to(accelerator.device), reduction="mean")


def sum_over_ranks(accelerator, value: torch.Tensor) -> torch.Tensor:
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(value.to(accelerator.device), reduction="sum")
