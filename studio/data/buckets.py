"""Aspect-ratio buckets and crop plans (the kohya-ss / SimpleTuner idea: group images of similar shape
so a batch has one tensor shape without squashing every picture into a square).

All sizes are (width, height) in pixels and multiples of the bucket step (the VAE needs multiples
of 8; the UNet's down-sampling wants more, hence the default 64).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class BucketSpec:
    """How one resolution is turned into buckets."""

    resolution: int
    step: int
    min_side: int
    max_side: int
    kind: str = "pixel_area"  # or "pixel": the shorter side equals the resolution
    no_upscale: bool = False

    @classmethod
    def from_config(cls, data, resolution: int) -> "BucketSpec":
        step = data.bucket_step
        lo = data.min_bucket_resolution or resolution // 2
        hi = data.max_bucket_resolution or resolution * 2
        lo = max(step, _round_to(lo, step))
        hi = max(lo, hi // step * step)
        return cls(resolution, step, lo, hi, data.resolution_type, data.bucket_no_upscale)

    def square(self) -> tuple[int, int]:
        side = min(self.max_side, max(self.min_side, self.resolution // self.step * self.step))
        return side, side

    @cached_property
    def shapes(self) -> list[tuple[int, int]]:
        """Every allowed bucket shape, portrait to landscape."""
        step, lo, hi, res = self.step, self.min_side, self.max_side, self.resolution
        out = set()
        if self.kind == "pixel":
            short = self.square()[0]
            for long in range(short, hi + 1, step):
                out.update({(short, long), (long, short)})
        else:
            area = res * res
            for width in range(lo, hi + 1, step):
                height = min(hi, int(area / width) // step * step)
                if height >= lo:
                    out.update({(width, height), (height, width)})  # portrait and landscape alike
        out.add(self.square())
        return sorted(out, key=lambda wh: wh[0] / wh[1])

    def nearest(self, aspect: float) -> tuple[int, int]:
        """The bucket whose aspect (w / h) is closest on a log scale; ties go to the larger area."""
        return min(self.shapes, key=lambda wh: (abs(math.log(wh[0] / wh[1] / aspect)), -wh[0] * wh[1]))

    def for_image(self, width: int, height: int) -> tuple[int, int]:
        """Bucket for an image of this size (no-upscale keeps small images at their own size)."""
        if self.no_upscale and _is_small(width, height, self):
            step = self.step
            return max(step, width // step * step), max(step, height // step * step)
        return self.nearest(width / height)


def _round_to(value: int, step: int) -> int:
    return int(math.ceil(value / step) * step)


def _is_small(width: int, height: int, spec: BucketSpec) -> bool:
    if spec.kind == "pixel":
        return min(width, height) < spec.resolution
    return width * height < spec.resolution * spec.resolution


def target_shape(width: int, height: int, spec: BucketSpec, data, aspect_rng: np.random.Generator) -> tuple[int, int]:
    """(w, h) an image is trained at: square, its own bucket, or a crop aspect from the list (FIELDS D23-D29)."""
    if data.crop and data.crop_aspect == "square":
        return spec.square()
    if data.crop and data.crop_aspect in ("closest", "random"):
        aspects = list(data.crop_aspect_buckets)
        if data.crop_aspect == "closest":
            aspect = min(aspects, key=lambda a: abs(math.log(a * height / width)))
        else:
            aspect = float(aspects[int(aspect_rng.integers(len(aspects)))])
        return spec.nearest(aspect)
    if data.enable_bucket:
        return spec.for_image(width, height)
    return spec.square()


@dataclass(frozen=True)
class CropPlan:
    """Resize (w, h) to `resize`, then cut `target` out at `top`, `left`."""

    resize: tuple[int, int]
    target: tuple[int, int]
    top: int
    left: int


def plan_crop(width: int, height: int, target: tuple[int, int], style: str, rng: np.random.Generator) -> CropPlan:
    """Scale so the image covers the target, then choose which part of the excess to cut."""
    tw, th = target
    scale = max(tw / width, th / height)
    rw, rh = max(tw, round(width * scale)), max(th, round(height * scale))
    spare_w, spare_h = rw - tw, rh - th
    if style in ("center", "centre"):
        top, left = spare_h // 2, spare_w // 2
    elif style == "corner":  # bottom-right corner, as SimpleTuner's `corner`
        top, left = spare_h, spare_w
    else:
        top, left = int(rng.integers(0, spare_h + 1)), int(rng.integers(0, spare_w + 1))
    return CropPlan((rw, rh), (tw, th), top, left)
