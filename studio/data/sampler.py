"""A deterministic per-epoch order: the permutation depends only on (seed, epoch), so a resumed run
sees exactly the batches an uninterrupted run would have seen."""
from __future__ import annotations

import torch


class EpochSampler(torch.utils.data.Sampler):
    """Yields (index, epoch) so datasets can derive per-item augmentation randomness from both."""

    def __init__(self, length: int, seed: int, shuffle: bool = True):
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0
        self.skip = 0  # items already consumed this epoch (set when resuming mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length - self.skip

    def __iter__(self):
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=gen).tolist()
        else:
            order = list(range(self.length))
        return iter([(i, self.epoch) for i in order[self.skip:]])
