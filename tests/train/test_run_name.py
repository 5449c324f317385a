"""`job.run_name` names the run in TensorBoard (a sub-folder of the log folder); without it the log
folder is used as before."""
from __future__ import annotations

from pathlib import Path

from studio.config import load_config
from studio.train.trackers import build_trackers


def _tensorboard_dir(tmp_path, job: dict) -> Path:
    cfg = load_config({"model": {"family": "sd15", "path": "tiny:sd15"}, "job": job,
                       "logging": {"report_to": ["tensorboard"]}})
    (tracker,) = build_trackers(cfg, tmp_path)
    tracker.start()
    try:
        return Path(tracker.writer.log_dir)
    finally:
        tracker.finish()


def test_run_name_is_the_tensorboard_run(tmp_path):
    assert _tensorboard_dir(tmp_path, {"run_name": "ink v2"}) == tmp_path / "runs" / "ink v2"
    assert _tensorboard_dir(tmp_path, {}) == tmp_path / "runs"
