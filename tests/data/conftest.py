"""Builders for image folders as users bring them: odd sizes, broken files, missing captions."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.config import load_config

TINY_BASE = {
    "model": {"family": "sd15", "path": "tiny:sd15"},
    "data": {"resolution": 64, "bucket_step": 16},
    "adapter": {"type": "lora", "rank": 4, "alpha": 4, "verify_exports": False},
    "training": {"learning_rate": 0.001, "batch_size": 2, "max_steps": 4, "seed": 7},
    "scheduler": {"name": "constant"},
    "memory": {"mixed_precision": "no", "gradient_checkpointing": False},
    "dataloader": {"num_workers": 0},
    "checkpointing": {"save_strategy": "no"},
    "logging": {"tensorboard": False},
    "sampling": {"prompts": [], "at_end": False},
}


def picture(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels if channels > 1 else pixels[..., 0], mode)


def add_image(folder: Path, name: str, width: int = 96, height: int = 96, caption: str | None = "a picture",
              seed: int = 0, mode: str = "RGB") -> Path:
    """Write `name` (format from its extension) and, unless caption is None, `<stem>.txt`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    picture(width, height, seed, mode).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    picture(width, height, seed).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def good_folder(tmp_path) -> Path:
    """Six clean images: two square, two landscape (2:1), two portrait (1:2)."""
    folder = tmp_path / "good"
    for i, (w, h) in enumerate([(96, 96), (80, 80), (128, 64), (160, 80), (64, 128), (80, 160)]):
        add_image(folder, f"img{i}.png", w, h, caption=f"picture number {i}", seed=i)
    return folder


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """Three good images and one of each problem the acceptance names (plus an unsupported GIF)."""
    folder = tmp_path / "messy"
    for i in range(3):
        add_image(folder, f"good{i}.png", 96, 96, caption=f"good picture {i}", seed=i)
    (folder / "truncated.png").write_bytes(png_bytes(96, 96, seed=9)[:400])
    (folder / "truncated.txt").write_text("cut short", encoding="utf-8")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "empty.txt").write_text("nothing here", encoding="utf-8")
    (folder / "notes.png").write_text("these are my notes, not a picture\n", encoding="utf-8")
    (folder / "notes.txt").write_text("notes", encoding="utf-8")
    add_image(folder, "uncaptioned.png", 96, 96, caption=None, seed=5)
    Image.new("RGB", (20000, 256), (90, 120, 200)).save(folder / "huge.png")
    (folder / "huge.txt").write_text("a very wide strip", encoding="utf-8")
    add_image(folder, "anim.gif", 96, 96, caption="a gif", seed=7)
    return folder


def data_config(path: Path, **data) -> object:
    """A validated tiny SD 1.5 config for `path` with data overrides."""
    base = {k: dict(v) for k, v in TINY_BASE.items()}
    base["data"].update({"path": str(path), **data})
    return load_config(base)
