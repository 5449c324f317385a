"""The image dataset: each view (an image at one resolution, with its bucket and crop plan) becomes
pixels or cached latents, a caption or cached text embeddings, and SDXL's size/crop conditioning.

Randomness (flip, caption dropout/shuffle, random crop position) is derived from
(seed, epoch, view), so an item looks the same whatever the worker count and whether or not the
run was resumed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from studio.data.buckets import CropPlan, plan_crop
from studio.data.captions import vary_caption
from studio.data.dataset import TrainingData
from studio.data.sampler import BucketBatchSampler, BucketLayout
from studio.data.scan import ImageItem

LATENT_FACTOR = 8  # pixels per latent cell of the SD / SDXL / SD3 / Flux VAEs


@dataclass(frozen=True)
class View:
    item: int  # index into the dataset's items
    res: int  # index into the resolutions
    plan: CropPlan  # resize + crop; for `random` crop style the position the cache uses


@dataclass(frozen=True)
class FolderSpec:
    path: Path
    repeats: int = 1
    weight: float = 1.0
    caption_strategy: str = "textfile"
    instance_prompt: str = ""


def load_view(path: Path, plan: CropPlan, flip: bool, with_mask: bool):
    """-> (pixels (3, H, W) in [-1, 1], loss mask (1, H/8, W/8) in [0, 1] or None)."""
    tw, th = plan.target
    box = (plan.left, plan.top, plan.left + tw, plan.top + th)
    with Image.open(path) as raw:
        img = ImageOps.exif_transpose(raw)  # phone photos: pixels stored sideways, EXIF says how to turn them
        rgb = img.convert("RGB").resize(plan.resize, Image.Resampling.BICUBIC).crop(box)
        alpha = img.convert("RGBA").getchannel("A").resize(plan.resize, Image.Resampling.BILINEAR).crop(box) \
            if with_mask else None
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    mask = None
    if alpha is not None:
        full = torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255.0)[None, None]  # (1, 1, H, W)
        mask = F.interpolate(full, size=(th // LATENT_FACTOR, tw // LATENT_FACTOR), mode="area")[0]
    if flip:
        pixels = pixels.flip(-1)
        mask = mask.flip(-1) if mask is not None else None
    return pixels, mask


class ImageDataset(TrainingData):
    """Indexed by (view, epoch) pairs from `BucketBatchSampler` (or a plain view index)."""

    def __init__(self, items: list[ImageItem], views: list[View], resolutions: list[int], folders: list[FolderSpec],
                 data, seed: int, train: bool, cache=None):
        self.items, self.views, self.resolutions, self.folders = items, views, resolutions, folders
        self.data, self.seed, self.train, self.cache = data, seed, train, cache
        self.bad_files, self.warnings, self.root = [], [], None  # filled by build_image_dataset

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        view = self.views[index]
        item = self.items[view.item]
        rng = np.random.default_rng([self.seed, epoch, index])
        flip = self.train and self.data.random_flip and bool(rng.random() < 0.5)
        caption = vary_caption(item.caption, rng, self.data) if self.train else item.caption
        plan = self._plan_for_epoch(view, rng)
        tw, th = plan.target
        left = plan.resize[0] - tw - plan.left if flip else plan.left  # crop x measured in the mirrored image
        out = {"original_size": torch.tensor([item.height, item.width]),
               "crop_top_left": torch.tensor([plan.top, left]), "target_size": torch.tensor([th, tw])}
        res = self.resolutions[view.res]
        if self.cache is not None and self.cache.serves_latents:
            out["latents"], mask = self.cache.latents(item, res, flip)
        else:
            out["pixel_values"], mask = load_view(item.path, plan, flip, self.data.alpha_mask and item.has_alpha)
        if self.data.alpha_mask:
            out["loss_mask"] = mask if mask is not None else torch.ones(1, th // LATENT_FACTOR, tw // LATENT_FACTOR)
        if self.cache is not None and self.cache.serves_text:
            out.update(self.cache.text(item if caption else None))
        out["caption"] = caption
        return out

    def _plan_for_epoch(self, view: View, rng: np.random.Generator) -> CropPlan:
        """A random crop moves every epoch when pixels are loaded; cached latents keep their crop."""
        random_crop = self.data.crop and self.data.crop_style == "random"
        if not (self.train and random_crop) or (self.cache is not None and self.cache.serves_latents):
            return view.plan
        (rw, rh), (tw, th) = view.plan.resize, view.plan.target
        return plan_crop(rw, rh, (tw, th), "random", rng)

    # ---- batching ------------------------------------------------------------------------------
    def batch_sampler(self, cfg, train: bool = True) -> BucketBatchSampler:
        """Batches of one bucket shape; the training order follows the FIELDS §3.2 sampling settings."""
        data = cfg.data
        sizes = list(data.batch_size_per_resolution) or [cfg.training.batch_size] * len(self.resolutions)
        layout = BucketLayout(
            bucket=[(v.res, *v.plan.target) for v in self.views],
            folder=[self.items[v.item].folder for v in self.views],
            repeats=[f.repeats for f in self.folders] if train else [1] * len(self.folders),
            weights=[f.weight for f in self.folders] if train else [1.0] * len(self.folders),
            batch_size=dict(enumerate(sizes)),
            uniform=data.dataset_sampling == "uniform")
        progressive = None
        if train and data.progressive_resolution:
            fractions = list(data.progressive_fractions) or [1.0 / len(self.resolutions)] * len(self.resolutions)
            order = sorted(range(len(self.resolutions)), key=lambda r: self.resolutions[r])  # smallest first
            progressive = [(r, fractions[r]) for r in order]
        return BucketBatchSampler(layout, cfg.training.seed, shuffle=train and data.shuffle,
                                  shuffle_in_bucket=not data.bucket_no_shuffle, progressive=progressive,
                                  loop_batch_size=cfg.training.batch_size)

    def cache_summary(self) -> dict | None:
        """What training reads from the cache (recorded in training_args.json); None = nothing cached."""
        if self.cache is None:
            return None
        return {"dir": str(self.cache.root), "latents": self.cache.serves_latents, "text": self.cache.serves_text}

    def fingerprint(self) -> str:
        """Content hash of the data used: every image's bytes (by hash), name and caption."""
        digest = hashlib.sha256()
        for item in sorted(self.items, key=lambda it: it.key):
            digest.update(f"{item.key}\0{item.sha256}\0{item.caption}\0".encode("utf-8"))
        return digest.hexdigest()[:16]
