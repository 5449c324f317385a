"""Deterministic per-epoch orders: a permutation depends only on (seed, epoch), so a resumed run sees
exactly the batches an uninterrupted run would have seen."""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch


class EpochSampler(torch.utils.data.Sampler):
    """Yields (index, epoch) so datasets can derive per-item augmentation randomness from both."""

    def __init__(self, length: int, seed: int, shuffle: bool = True):
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0
        self.skip = 0  # items already consumed this epoch (set when resuming mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_total_batches(self, total: int) -> None:
        """Batches in the whole run: every epoch is alike here, so nothing depends on it."""

    def __len__(self) -> int:
        return self.length - self.skip

    def __iter__(self):
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=gen).tolist()
        else:
            order = list(range(self.length))
        return iter([(i, self.epoch) for i in order[self.skip:]])


def largest_remainder(total: int, shares: list[float]) -> list[int]:
    """Split `total` into integers proportional to `shares` that add up exactly to `total`."""
    whole = sum(shares)
    if whole <= 0 or total <= 0:
        return [0] * len(shares)
    exact = [total * s / whole for s in shares]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


@dataclass
class BucketLayout:
    """What the batch sampler needs to know about the dataset's views (an image at one resolution)."""

    bucket: list[tuple]  # per view: its bucket key (resolution index, width, height)
    folder: list[int]  # per view: its dataset folder
    repeats: list[int]  # per folder
    weights: list[float]  # per folder
    batch_size: dict[int, int]  # resolution index -> batch size
    uniform: bool = False  # folder shares by weight alone instead of weight x size


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of one bucket shape each, as lists of (view index, epoch).

    Per epoch every (folder, bucket) group gets a fixed number of draws (repeats and folder weights
    decide it), so the number of batches is the same every epoch. Inside a group the views are
    cycled through fresh permutations; then each bucket is cut into batches and the batches are
    shuffled. With `progressive` phases [(resolution index, fraction), ...], batch number g of the
    run comes from the phase whose share of the run holds g / total_batches.
    """

    def __init__(self, layout: BucketLayout, seed: int, shuffle: bool = True, shuffle_in_bucket: bool = True,
                 progressive: list[tuple[int, float]] | None = None, loop_batch_size: int = 1):
        self.layout, self.seed, self.shuffle = layout, seed, shuffle
        self.shuffle_in_bucket = shuffle and shuffle_in_bucket
        self.progressive = progressive
        self.loop_batch_size = loop_batch_size
        self.epoch, self.skip_batches, self.total_batches = 0, 0, None
        self.groups = self._group_draws()
        self.epoch_batches = len(self._epoch_batches(0))

    # The loop records mid-epoch progress as `skip = batches_done * training.batch_size` items.
    @property
    def skip(self) -> int:
        return self.skip_batches * self.loop_batch_size

    @skip.setter
    def skip(self, items: int) -> None:
        self.skip_batches = items // self.loop_batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_total_batches(self, total: int) -> None:
        """Batches in the whole run (progressive resolution splits this)."""
        self.total_batches = total

    def __len__(self) -> int:
        return self.epoch_batches - self.skip_batches

    def __iter__(self):
        batches = self._epoch_batches(self.epoch)
        if self.progressive:
            batches = self._progressive_order(batches)
        return iter([[(v, self.epoch) for v in batch] for batch in batches[self.skip_batches:]])

    # ---- building an epoch ---------------------------------------------------------------------
    def _group_draws(self) -> list[tuple[tuple, list[int], int]]:
        """[(bucket key, views of one folder in that bucket, draws per epoch)], in a fixed order."""
        lay = self.layout
        members: dict[tuple[int, tuple], list[int]] = {}
        for view, (bucket, folder) in enumerate(zip(lay.bucket, lay.folder)):
            members.setdefault((folder, bucket), []).append(view)
        sizes = [sum(len(v) for (f, _), v in members.items() if f == d) for d in range(len(lay.repeats))]
        natural = [sizes[d] * lay.repeats[d] for d in range(len(sizes))]
        shares = [lay.weights[d] * (1.0 if lay.uniform else natural[d]) if sizes[d] else 0.0
                  for d in range(len(sizes))]
        per_folder = largest_remainder(sum(natural), shares)
        groups = []
        for d in range(len(sizes)):
            keys = sorted(k for k in members if k[0] == d)
            counts = largest_remainder(per_folder[d], [len(members[k]) for k in keys])
            groups += [(k[1], members[k], n) for k, n in zip(keys, counts) if n > 0]
        return groups

    def _rng(self, epoch: int, *salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, *salt])

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        by_bucket: dict[tuple, list[int]] = {}
        for g, (bucket, views, draws) in enumerate(self.groups):
            picked: list[int] = []
            cycle = 0
            while len(picked) < draws:  # repeats > 1: each pass is a new permutation
                order = self._rng(epoch, 1, g, cycle).permutation(len(views)) if self.shuffle_in_bucket \
                    else range(len(views))
                picked += [views[i] for i in order]
                cycle += 1
            by_bucket.setdefault(bucket, []).extend(picked[:draws])
        batches = []
        for b, bucket in enumerate(sorted(by_bucket)):
            views = by_bucket[bucket]
            if self.shuffle_in_bucket:
                views = [views[i] for i in self._rng(epoch, 2, b).permutation(len(views))]
            size = self.layout.batch_size[bucket[0]]
            batches += [views[i:i + size] for i in range(0, len(views), size)]
        if self.shuffle:
            batches = [batches[i] for i in self._rng(epoch, 3).permutation(len(batches))]
        return batches

    def _progressive_order(self, batches: list[list[int]]) -> list[list[int]]:
        """Same epoch length; position p takes the next batch of the phase active at that point of the run."""
        per_res: dict[int, list[list[int]]] = {}
        for batch in batches:
            per_res.setdefault(self.layout.bucket[batch[0]][0], []).append(batch)
        phases = [res for res, _ in self.progressive if res in per_res]  # a resolution without data is skipped
        bounds = np.cumsum([f for res, f in self.progressive if res in per_res]).tolist()
        total = self.total_batches or self.epoch_batches
        taken = dict.fromkeys(phases, 0)
        out = []
        for p in range(len(batches)):
            fraction = (self.epoch * self.epoch_batches + p) / total * bounds[-1]
            res = phases[min(bisect.bisect_right(bounds, fraction), len(phases) - 1)]
            out.append(per_res[res][taken[res] % len(per_res[res])])
            taken[res] += 1
        return out
