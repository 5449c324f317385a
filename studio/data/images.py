"""Minimal image path: a folder of images with same-name caption files, resized and cropped to a square.

Randomness (crop position, flip) is derived from (seed, epoch, index), so an item looks the same
whatever the worker count and whether or not the run was resumed.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class ImageItem:
    path: Path
    caption: str


@dataclass
class BadFile:
    path: Path
    reason: str


def scan_image_folder(folder: Path, caption_extension: str) -> tuple[list[ImageItem], list[BadFile]]:
    """Every image with its caption; files that cannot be used are returned with the reason."""
    if not folder.is_dir():
        raise FileNotFoundError(f"data.path: folder not found: {folder}")
    items, bad = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        caption_file = path.with_suffix(caption_extension)
        if not caption_file.is_file():
            bad.append(BadFile(path, f"no caption file {caption_file.name}"))
            continue
        caption = caption_file.read_text(encoding="utf-8", errors="replace").strip()
        if not caption:
            bad.append(BadFile(path, f"caption file {caption_file.name} is empty"))
            continue
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as err:  # PIL raises many types for broken files
            bad.append(BadFile(path, f"unreadable image: {err}"))
            continue
        items.append(ImageItem(path, caption))
    return items, bad


def fingerprint_files(paths: list[Path]) -> str:
    """Content fingerprint of a dataset: sha256 over each file's relative name and bytes."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(os.fsencode(path.name) + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def load_square(path: Path, resolution: int, center_crop: bool, flip: bool, rng: np.random.Generator):
    """-> (pixels (3, R, R) in [-1, 1], original (h, w), crop top-left (t, l))."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = resolution / min(w, h)
        new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    if center_crop:
        top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    else:
        top = int(rng.integers(0, new_h - resolution + 1))
        left = int(rng.integers(0, new_w - resolution + 1))
    img = img.crop((left, top, left + resolution, top + resolution))
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    return pixels, (h, w), (top, left)


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Indexed by (index, epoch) pairs coming from `EpochSampler`."""

    def __init__(self, items: list[ImageItem], resolution: int, center_crop: bool, random_flip: bool, seed: int,
                 caption_ext: str = ".txt"):
        self.items, self.resolution, self.caption_ext = items, resolution, caption_ext
        self.center_crop, self.random_flip, self.seed = center_crop, random_flip, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.items[index]
        pixels, original, crop = load_square(item.path, self.resolution, self.center_crop, self.random_flip,
                                             _item_rng(self.seed, epoch, index))
        return {"pixel_values": pixels, "caption": item.caption,
                "original_size": torch.tensor(original), "crop_top_left": torch.tensor(crop)}

    def fingerprint(self) -> str:
        """Content hash of every image and caption used (recorded in training_args.json)."""
        return fingerprint_files([p for it in self.items for p in (it.path, it.path.with_suffix(self.caption_ext))])
