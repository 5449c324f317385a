"""The Preprocess tab's reading of a dataset: the preflight scan (every unusable file with its reason)
and the state of the dataset's cache. Both only read files; encoding runs as a queued job."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from studio.config import JobConfig
from studio.queue import JobStore
from studio.registry.families import row
from studio.runfolder import Event, read_progress

SCAN_COLUMNS = ["file", "problem", "verdict"]


@dataclass
class ScanResult:
    usable: int = 0
    rows: list[list[str]] = field(default_factory=list)  # file, reason, "left out" | "warning"
    message: str = ""

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=SCAN_COLUMNS)


def scan_dataset(cfg: JobConfig) -> ScanResult:
    """The same scan the trainer runs first (nothing is decoded twice: facts are cached by size/mtime)."""
    if row(cfg.model.family).data != "images":
        return ScanResult(message=f"The preflight scan covers image datasets; `{cfg.model.family}` data are "
                                  "checked line by line when the job starts (each bad record is named).")
    from studio.data.image_source import DataError
    from studio.data.preflight import scan_job_images

    try:
        report = scan_job_images(cfg)
    except (DataError, OSError) as err:
        return ScanResult(message=f"**Error:** {err}")
    rows = [[str(f.path), f.reason, "left out"] for f in report.bad]
    rows += [[str(f.path), f.reason, "warning"] for f in report.warnings]
    verdict = "every file is usable" if not report.bad else (
        f"⚠ {len(report.bad)} file(s) will be left out" + (" (data.on_bad_file=error: the job will refuse to "
                                                             "start)" if cfg.data.on_bad_file == "error" else ""))
    message = f"**{len(report.items)} usable image(s)** · {verdict}" + (
        f" · {len(report.warnings)} warning(s)" if report.warnings else "")
    return ScanResult(len(report.items), rows, message)


def _folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def last_cache_report(store: JobStore, cache_dir: Path) -> str:
    """What the newest preprocess job of this cache said (fresh / stale / missing counts)."""
    for job in sorted(store.list(), key=lambda j: j.created_at, reverse=True):
        if job.kind != "preprocess":
            continue
        state = None
        for rec in read_progress(Path(job.run_dir))[0]:
            if rec.get("event") == Event.CACHE_STATE and Path(rec.get("dir", "")) == cache_dir:
                state = rec
        if state is not None:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.get("time", 0)))
            return (f"Job #{job.id} {job.name} ({job.status}) reported at {when} ({state.get('when')}): "
                    f"{state.get('fresh', 0)} fresh, {state.get('stale', 0)} stale, "
                    f"{state.get('missing', 0)} missing")
    return "No preprocess job has reported on this cache yet."


def cache_state(store: JobStore, cfg: JobConfig) -> str:
    if row(cfg.model.family).data != "images":
        return f"`{cfg.model.family}` datasets are prepared when training starts; there is no separate cache."
    from studio.data.image_source import cache_root

    try:
        root = cache_root(cfg)
    except (OSError, ValueError) as err:
        return f"**Error:** {err}"
    manifest = root / "manifest.json"
    if not manifest.is_file():
        return f"No cache yet in `{root}`: training encodes on the fly, or press **Queue caching job**."
    try:
        entries = len(json.loads(manifest.read_text(encoding="utf-8")).get("entries", {}))
    except (OSError, json.JSONDecodeError):
        entries = "?"
    count, size = _folder_size(root)
    return (f"Cache `{root}`: {entries} item(s) in the manifest, {count} file(s), {size / 2**20:.1f} MiB.\n\n"
            + last_cache_report(store, root))
