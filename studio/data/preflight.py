"""The dataset scan before anything is loaded (training and preprocessing): every unusable file is
named with its reason; `data.on_bad_file=error` refuses to start, `skip` reports the count."""
from __future__ import annotations

import logging

from studio.data.image_source import check_bad_files, scan_images
from studio.data.scan import ScanReport
from studio.registry.families import row
from studio.runfolder.events import Event

log = logging.getLogger("studio.data")
LISTED_IN_EVENT = 200  # progress.jsonl names at most this many files (the console log has them all)


def is_image_job(cfg) -> bool:
    return row(cfg.model.family).data == "images"


def scan_job_images(cfg) -> ScanReport:
    """Scan the training folders and the separate eval folder, if any, into one report."""
    report, _ = scan_images(cfg, "train")
    if cfg.data.eval_path:
        extra, _ = scan_images(cfg, "eval")
        report.items += extra.items
        report.bad += extra.bad
        report.warnings += extra.warnings
    return report


def scan_image_job(cfg, progress=None) -> ScanReport:
    """Scan the training (and separate eval) folders, report, and raise `DataError` when refused."""
    report = scan_job_images(cfg)
    if progress is not None:
        progress.event(Event.SCAN, images=len(report.items), bad=len(report.bad), warnings=len(report.warnings),
                       bad_files=[{"path": str(f.path), "reason": f.reason} for f in report.bad[:LISTED_IN_EVENT]],
                       warning_files=[{"path": str(f.path), "reason": f.reason}
                                      for f in report.warnings[:LISTED_IN_EVENT]])
    log.info("dataset scan: %d usable image(s), %d unusable, %d warning(s)", len(report.items), len(report.bad),
             len(report.warnings))
    check_bad_files(report, cfg.data.on_bad_file)
    return report
