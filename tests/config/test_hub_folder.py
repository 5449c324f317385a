"""`hub.model_id` names the local sub-folder of the run, as SimpleTuner's `--hub_model_id` (seed 002, H03)."""
from __future__ import annotations

from pathlib import Path

from studio.config import finalize_job, load_config

BASE = {"model": {"path": "tiny:sd15"}, "data": {"path": "demo:images"}}


def test_model_id_is_the_run_sub_folder(tmp_path):
    cfg = load_config({**BASE, "job": {"name": "a", "output_dir": str(tmp_path / "out")},
                       "hub": {"model_id": "me/my-lora"}})
    once = finalize_job(cfg)
    assert Path(once.job.output_dir) == tmp_path / "out" / "my-lora"
    assert finalize_job(once).job.output_dir == once.job.output_dir  # queue, then trainer: same folder


def test_default_run_folder_without_model_id(studio_home):
    cfg = finalize_job(load_config({**BASE, "job": {"name": "b"}}))
    assert Path(cfg.job.output_dir) == studio_home.resolve() / "runs" / "b"


def test_a_clone_gets_its_own_folder(studio_home, tmp_path):
    from studio.queue import JobStore

    store = JobStore()
    job = store.add({**BASE, "data": {"path": str(tmp_path)}, "job": {"name": "orig"},
                     "hub": {"model_id": "me/style"}})
    assert Path(job.run_dir) == studio_home.resolve() / "runs" / "orig" / "style"
    copy = store.clone(job.id)
    assert Path(copy.run_dir) == studio_home.resolve() / "runs" / "orig_2" / "style"
