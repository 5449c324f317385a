"""From a config to image items: which folders, the preflight scan, the eval hold-out, the views
(an image at each resolution, with its bucket and crop) and finally the dataset."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from studio.data.buckets import BucketSpec, plan_crop, target_shape
from studio.data.captions import CaptionSource
from studio.data.images import FolderSpec, ImageDataset, View
from studio.data.scan import FactsCache, ScanReport, scan_folder

log = logging.getLogger("studio.data")
CACHE_FOLDER = ".studio_cache"


class DataError(ValueError):
    """A dataset problem the user must fix; the message names the files."""


def resolve_data_path(path: str) -> Path:
    """`demo:images` generates the offline demo dataset into STUDIO_HOME once; anything else is a path."""
    if path.startswith("demo:"):
        from studio.data.demo import ensure_demo_dataset

        return ensure_demo_dataset(path[5:])
    return Path(path).expanduser().resolve()


def cache_root(cfg) -> Path:
    """`data.cache_dir`, or `.studio_cache` inside the (first) dataset folder."""
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir).expanduser().resolve()
    return resolve_data_path(cfg.data.path) / CACHE_FOLDER


def dataset_folders(cfg, source: str = "train") -> list[FolderSpec]:
    """`train`: data.path and data.datasets; `eval`: data.eval_path."""
    data = cfg.data
    if source == "eval":
        return [FolderSpec(resolve_data_path(data.eval_path), 1, 1.0, data.caption_strategy, data.instance_prompt)]
    folders = [FolderSpec(resolve_data_path(data.path), data.repeats, 1.0, data.caption_strategy,
                          data.instance_prompt)]
    for extra in data.datasets:
        folders.append(FolderSpec(resolve_data_path(extra.path), extra.repeats, extra.weight,
                                  extra.caption_strategy or data.caption_strategy,
                                  extra.instance_prompt or data.instance_prompt))
    return folders


def folder_field(source: str, index: int) -> str:
    """The setting that names folder `index` of `source` (for error messages)."""
    if source == "eval":
        return "data.eval_path"
    return "data.path" if index == 0 else f"data.datasets.{index - 1}.path"


def scan_images(cfg, source: str = "train") -> tuple[ScanReport, list[FolderSpec]]:
    """Scan every folder of `source`; folder or caption-table problems raise `DataError`."""
    root = cache_root(cfg)
    facts = FactsCache(root)
    report = ScanReport()
    folders = dataset_folders(cfg, source)
    for index, folder in enumerate(folders):
        if not folder.path.is_dir():
            raise DataError(f"{folder_field(source, index)}: folder not found: {folder.path}")
        try:
            captions = CaptionSource(folder.path, folder.caption_strategy, cfg.data, folder.instance_prompt)
        except (OSError, ValueError) as err:
            raise DataError(str(err)) from None
        scan_folder(folder.path, index, captions, cfg.data, facts, root.parent, report)
    facts.save()
    return report, folders


def split_items(items: list, ratio: float, seed: int) -> tuple[list, list]:
    """Deterministic hold-out: the same seed and items give the same split."""
    if ratio <= 0 or len(items) < 2:
        return items, []
    order = np.random.default_rng([seed, 7]).permutation(len(items)).tolist()
    n_eval = min(len(items) - 1, max(1, round(len(items) * ratio)))
    held = set(order[:n_eval])
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]


def cap_items(items: list, limit: int, seed: int) -> list:
    """`max_samples`: a seeded subset (in the original order), so the cap does not favour one folder."""
    if limit <= 0 or len(items) <= limit:
        return items
    keep = set(np.random.default_rng([seed, 11]).permutation(len(items))[:limit].tolist())
    return [it for i, it in enumerate(items) if i in keep]


def select_items(cfg, split: str, quiet: bool = False) -> tuple[list, list[FolderSpec], ScanReport]:
    """The items of one split after scan, hold-out and cap; bad files are reported (or refused)."""
    data = cfg.data
    source = "eval" if split == "eval" and data.eval_path else "train"
    report, folders = scan_images(cfg, source)
    check_bad_files(report, data.on_bad_file, quiet)
    items = report.items
    if source == "train":
        train, held = split_items(items, 0.0 if data.eval_path else data.eval_split_ratio, cfg.training.seed)
        items = held if split == "eval" else cap_items(train, data.max_samples, cfg.training.seed)
    return items, folders, report


def check_bad_files(report: ScanReport, on_bad_file: str, quiet: bool = False) -> None:
    """Refuse (`error`) or log (`skip`) the files the scan left out."""
    for finding in [] if quiet else report.warnings:
        log.warning("%s: %s", finding.path, finding.reason)
    if not report.bad:
        return
    if on_bad_file == "error":
        raise DataError(f"data.on_bad_file=error: {len(report.bad)} unusable file(s) found; fix or remove them, "
                        f"or set data.on_bad_file=skip to train on the rest:\n{report.listing()}")
    if not quiet:
        log.warning("skipping %d unusable file(s) (data.on_bad_file=skip):\n%s", len(report.bad), report.listing())


def key_rng(key: str, *salt: int) -> np.random.Generator:
    """Randomness tied to an item's name, not the training seed: a cache built once stays valid."""
    return np.random.default_rng([int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:15], 16), *salt])


def plan_views(items: list, cfg) -> list[View]:
    """One view per (item, resolution): its bucket (target shape) and crop plan."""
    data = cfg.data
    specs = [BucketSpec.from_config(data, r) for r in data.all_resolutions()]
    style = data.crop_style if data.crop else "center"
    views = []
    for i, item in enumerate(items):
        for r, spec in enumerate(specs):
            target = target_shape(item.width, item.height, spec, data, key_rng(item.key, r, 1))
            views.append(View(i, r, plan_crop(item.width, item.height, target, style, key_rng(item.key, r, 2))))
    return views


def build_image_dataset(cfg, split: str = "train", cache=None) -> ImageDataset:
    items, folders, report = select_items(cfg, split)
    if not items and split == "train":
        raise DataError(f"data.path: no usable images with captions in {folders[0].path}"
                        + (f" ({len(report.bad)} unusable file(s):\n{report.listing()})" if report.bad else ""))
    dataset = ImageDataset(items, plan_views(items, cfg), cfg.data.all_resolutions(), folders, cfg.data,
                           cfg.training.seed, train=split == "train", cache=cache)
    dataset.bad_files, dataset.warnings, dataset.root = report.bad, report.warnings, folders[0].path
    return dataset
