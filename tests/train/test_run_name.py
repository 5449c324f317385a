"""`job.run_name` names the run in TensorBoard (a sub-folder of the log folder); without it the log
folder is used as before."""
from __future__ import annotations

from studio.commands.train import _tensorboard
from studio.config import load_config


def _writer_dir(tmp_path, job: dict) -> str:
    cfg = load_config({"model": {"family": "sd15", "path": "tiny:sd15"}, "job": job,
                       "logging": {"tensorboard": True}})
    writer = _tensorboard(cfg, tmp_path)
    try:
        return writer.log_dir
    finally:
        writer.close()


def test_run_name_is_the_tensorboard_run(tmp_path):
    assert _writer_dir(tmp_path, {"run_name": "ink v2"}) == str(tmp_path / "runs" / "ink v2")
    assert _writer_dir(tmp_path, {}) == str(tmp_path / "runs")
