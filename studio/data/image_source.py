"""Build the image dataset for a config: scan, report bad files, hold out eval items, cap the size."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from studio.data.images import ImageCaptionDataset, scan_image_folder

log = logging.getLogger("studio.data")


class DataError(ValueError):
    """A dataset problem the user must fix; the message names the files."""


def resolve_data_path(path: str) -> Path:
    """`demo:images` generates the offline demo dataset into STUDIO_HOME once; anything else is a path."""
    if path.startswith("demo:"):
        from studio.data.demo import ensure_demo_dataset

        return ensure_demo_dataset(path[5:])
    return Path(path).expanduser().resolve()


def split_items(items: list, ratio: float, seed: int) -> tuple[list, list]:
    """Deterministic hold-out: the same seed and items give the same split."""
    if ratio <= 0 or len(items) < 2:
        return items, []
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = min(len(items) - 1, max(1, round(len(items) * ratio)))
    held = set(order[:n_eval])
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]


def build_image_dataset(cfg, split: str = "train") -> ImageCaptionDataset:
    data = cfg.data
    use_eval_file = split == "eval" and data.eval_path
    folder = resolve_data_path(data.eval_path if use_eval_file else data.path)
    items, bad = scan_image_folder(folder, data.caption_extension)
    if bad:
        listing = "\n".join(f"  {b.path}: {b.reason}" for b in bad)
        if data.on_bad_file == "error":
            raise DataError(f"data.path: {len(bad)} unusable file(s) (data.on_bad_file=error):\n{listing}")
        log.warning("skipping %d unusable file(s):\n%s", len(bad), listing)
    if not use_eval_file:
        train, held = split_items(items, 0.0 if data.eval_path else data.eval_split_ratio, cfg.training.seed)
        items = held if split == "eval" else train
    if split == "train" and data.max_samples > 0:
        items = items[: data.max_samples]
    if not items and split == "train":
        raise DataError(f"data.path: no usable images with captions in {folder}")
    dataset = ImageCaptionDataset(items, data.resolution, data.center_crop,
                                  data.random_flip and split == "train", cfg.training.seed, data.caption_extension)
    dataset.bad_files = bad
    dataset.root = folder
    return dataset
