"""`python -m studio preprocess CONFIG.json`: scan the dataset, then encode into the cache whatever is
missing or out of date (VAE latents per bucket resolution, text-encoder outputs).

Progress goes to `job.output_dir/progress.jsonl` like training: one `{"step", "total", ...}` record per
batch of items, then `{"event": "done"}` or `{"event": "error", "message"}` (exit 1). A config error
exits 2 before anything runs.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from studio.config import ConfigError
from studio.registry.families import FAMILIES, row
from studio.runfolder.events import Event
from studio.runfolder.progress import ProgressLog, run_reported

log = logging.getLogger("studio.data")
CACHED_DATA = ("images", "songs")  # data kinds with a preprocessed cache


class PreprocessProgress(ProgressLog):
    """progress.jsonl records per batch of items; rate and ETA count from the first encoded batch on
    (loading the encoders is not part of the encoding rate)."""

    encode_t0: float | None = None

    def start_encoding(self) -> None:
        self.encode_t0 = time.time()

    def items(self, done: int, total: int, **extra) -> None:
        self.total = total
        spent = max(time.time() - (self.encode_t0 or self.t0), 1e-9)
        rate = done / spent
        self._write({"step": done, "total": total, "items_per_s": round(rate, 3),
                     "elapsed_s": round(self.elapsed(), 2), "eta_s": round((total - done) / rate, 1) if done else None,
                     **extra, "time": time.time()})


def preprocess_from_cli(config_path: str, overrides: list[str]) -> int:
    from studio.config.loader import load_job
    from studio.runfolder.console import capture_console, log_to_stdout
    from studio.runfolder.device import check_device
    from studio.runfolder.layout import console_path

    cfg = load_job(config_path, overrides, kind="preprocess")  # missing inputs: exit 2 before anything runs
    check_device(cfg)
    if row(cfg.model.family).data not in CACHED_DATA:
        cached = [f for f, info in FAMILIES.items() if info.data in CACHED_DATA]
        raise ConfigError([("model.family", f"preprocess builds image and song caches ({', '.join(cached)}); "
                            f"'{cfg.model.family}' is not supported here")])
    run_dir = Path(cfg.job.output_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with capture_console(console_path(run_dir)), log_to_stdout(cfg.logging.log_level):
        return run_preprocess(cfg, run_dir)


def run_preprocess(cfg, run_dir: Path) -> int:
    progress = PreprocessProgress(run_dir, total_steps=0)
    return run_reported(progress, "preprocessing",
                        lambda: {"output_dir": str(run_dir), **preprocess(cfg, progress)})


def make_family(cfg):
    """The family object on the device and dtype training would use (nothing loaded yet)."""
    from accelerate import Accelerator

    from studio.families.base import build_family
    from studio.runfolder.device import accelerator_options, mixed_precision, weight_dtype

    accelerator = Accelerator(mixed_precision=mixed_precision(cfg), **accelerator_options(cfg))
    return build_family(cfg, accelerator.device, weight_dtype(accelerator.mixed_precision))


def without_cache(cfg):
    """A copy of `cfg` that loads the family without attaching the cache being built."""
    uncached = cfg.model_copy(deep=True)
    uncached.data.cache_mode = "off"
    return uncached


def load_encoders(cfg, family=None):
    """Load the family with every encoder on the device, without attaching the cache being built
    (`family`, when given, must have been made from `without_cache(cfg)`)."""
    family = family or make_family(without_cache(cfg))
    family.load()
    if cfg.memory.offload_during_startup:  # the text encoders encode from system RAM (image families)
        family.place_encoders(vae=True, text=False)
    return family


def preprocess(cfg, progress: PreprocessProgress) -> dict:
    if row(cfg.model.family).data == "songs":  # songs -> VAE latents + encoded conditions
        return preprocess_songs(cfg, progress)
    from studio.data.image_cache import ImageCache
    from studio.data.preflight import scan_image_job

    scan = scan_image_job(cfg, progress)
    if not scan.items:
        raise ValueError(f"data.path: no usable images with captions in {cfg.data.path}")
    family = make_family(without_cache(cfg))
    cache = ImageCache(cfg, family, scan.items)
    before = cache.report()
    if not before.is_fresh:  # an unchanged dataset never loads the model
        progress.event(Event.LOADING, message=f"loading the {cfg.model.family} encoders from {cfg.model.path}")
        load_encoders(cfg, family)
    log.info("cache %s before: %s", cache.root, before.summary())
    for key, why in before.reasons[:50]:
        log.info("  %s: %s", key, why)
    progress.event(Event.CACHE_STATE, when="before", dir=str(cache.root), **before.as_dict())
    started = time.time()
    progress.start_encoding()
    encoded = cache.build(family, on_progress=lambda done, total: progress.items(done, total), drop_others=True)
    seconds = time.time() - started
    after = cache.report()
    rate = encoded / seconds if encoded and seconds > 0 else None
    log.info("encoded %d item(s) in %.1f s%s; cache now: %s", encoded, seconds,
             f" ({rate:.2f} items/s)" if rate else "", after.summary())
    progress.event(Event.CACHE_STATE, when="after", dir=str(cache.root), **after.as_dict())
    return {"items": len(scan.items), "bad_files": len(scan.bad), "encoded": encoded,
            "removed": before.removed, "items_per_s": round(rate, 3) if rate else None,
            "cache_dir": str(cache.root)}


def preprocess_songs(cfg, progress) -> dict:
    """Build or refresh the song cache of `data.path` (and `data.eval_path`); returns the summary."""
    from studio.data.audio_preprocess import refresh_song_cache, report_findings
    from studio.data.image_source import DataError
    from studio.families.base import build_family
    from studio.runfolder.device import standalone_device

    device, dtype = standalone_device(cfg)
    progress.event(Event.LOADING, message=f"loading the {cfg.model.family} encoders from {cfg.model.path}")
    family = build_family(cfg, device, dtype)
    family.load_encoders()
    summary = {"songs": 0, "bad_files": 0, "encoded": 0, "removed": 0}
    for source in ("train", "eval") if cfg.data.eval_path else ("train",):
        started = time.time()
        result = refresh_song_cache(cfg, family, source, on_progress=lambda d, t: progress.items(d, t))
        report_findings(result, cfg.data.on_bad_file, progress)
        seconds = time.time() - started
        log.info("%s: %d song(s) cached in %s (%d encoded in %.1f s, %d unusable, %d removed)", source,
                 len(result.keys), result.root, result.encoded, seconds, len(result.bad), result.before.removed)
        progress.event(Event.CACHE_STATE, when="after", source=source, dir=str(result.root), songs=len(result.keys),
                       encoded=result.encoded, bad=len(result.bad), removed=result.before.removed)
        for key in ("encoded", "removed"):
            summary[key] += result.encoded if key == "encoded" else result.before.removed
        summary["songs"] += len(result.keys)
        summary["bad_files"] += len(result.bad)
        summary.setdefault("cache_dir", str(result.root))
    if summary["songs"] == 0:
        raise DataError(f"data.path: no usable songs in {cfg.data.path}")
    return summary


def cache_status(cfg):
    """The cache's state for this config (fresh / stale / missing / removed) without loading a model:
    for the UI's Preprocess tab. Raises `DataError` for a missing folder or caption table."""
    import torch

    from studio.data.image_cache import ImageCache
    from studio.data.image_source import scan_images
    from studio.families.base import build_family
    from studio.runfolder.device import mixed_precision, weight_dtype

    family = build_family(cfg, torch.device("cpu"), weight_dtype(mixed_precision(cfg)))  # constructed only: nothing is loaded
    items = scan_images(cfg, "train")[0].items + (scan_images(cfg, "eval")[0].items if cfg.data.eval_path else [])
    return ImageCache(cfg, family, items).report()
