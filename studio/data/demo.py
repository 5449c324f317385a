"""The offline demo dataset: small synthetic pictures with captions, generated deterministically.

Nothing is downloaded: coloured shapes on plain backgrounds, captioned with what they show, so a
trained adapter has something real (colour/shape words) to learn.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40)}
SHAPES = ("circle", "square")


def write_demo_images(out_dir: Path, size: int = 96) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    index = 0
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            background = tuple(int(v) for v in rng.integers(200, 256, 3))
            img = Image.new("RGB", (size, size), background)
            draw = ImageDraw.Draw(img)
            margin = int(rng.integers(size // 8, size // 4))
            box = (margin, margin, size - margin, size - margin)
            (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=rgb)
            name = f"{index:02d}_{colour}_{shape}"
            img.save(out_dir / f"{name}.png")
            (out_dir / f"{name}.txt").write_text(f"a {colour} {shape} on a plain background\n", encoding="utf-8")
            index += 1
    return out_dir


def ensure_demo_dataset(name: str) -> Path:
    """`demo:images` -> STUDIO_HOME/datasets/demo-images, written once (atomic rename)."""
    from studio.paths import studio_home

    if name not in ("images", "songs"):
        raise FileNotFoundError(f"data.path: unknown demo dataset 'demo:{name}'; available: demo:images, "
                                "demo:songs")
    target = studio_home() / "datasets" / f"demo-{name}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".demo-{name}-", dir=target.parent))
    if name == "songs":  # synthetic songs with sidecars for the music family (studio/data/audio.py)
        from studio.data.audio import write_demo_songs

        write_demo_songs(tmp)
    else:
        write_demo_images(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target
