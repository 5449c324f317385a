"""`TrainingData`: what the trainer may ask of a family's dataset besides `len` and `[i]`.

Every dataset a family returns from `train_dataset()` derives from it, so the trainer calls these
methods directly instead of probing for them.
"""
from __future__ import annotations

import torch


class TrainingData(torch.utils.data.Dataset):
    def batch_sampler(self, cfg, train: bool = True):
        """A batch sampler that decides the batches itself (aspect buckets: one shape per batch), or
        None for plain shuffled batches of `training.batch_size` (the trainer's `EpochSampler`)."""
        return None

    def fingerprint(self) -> str | None:
        """Hash of what the dataset holds (files, captions, settings), written to training_args.json."""
        return None

    def cache_summary(self) -> dict | None:
        """What is read from a preprocessed cache (None: nothing is cached)."""
        return None
