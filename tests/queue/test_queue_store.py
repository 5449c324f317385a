"""The SQLite store: names, run folders, transitions, ordering, claiming and settings."""
from __future__ import annotations

import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from studio.config import ConfigError, load_config
from studio.queue import JobStore, QueueError


def test_auto_name_and_default_run_folder(store, add_fake, home):
    job = add_fake()
    assert re.fullmatch(r"sd15_\d{8}_\d{6}", job.name)
    assert job.status == "pending" and job.kind == "train" and job.attempts == 0
    assert Path(job.run_dir) == home / "runs" / job.name
    assert job.config["job"]["name"] == job.name
    assert job.config["job"]["output_dir"] == job.run_dir
    assert store.path == home / "queue.db"
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_taken_names_get_a_suffix(add_fake):
    names = [add_fake("mylora").name for _ in range(3)]
    assert names == ["mylora", "mylora_2", "mylora_3"]


def test_jobconfig_is_accepted_and_preprocess_kind(store, tmp_path):
    cfg = load_config({"model": {"path": "tiny:sd15"}, "data": {"path": str(tmp_path)}, "job": {"name": "pre"}})
    job = store.add(cfg, kind="preprocess")
    assert (job.name, job.kind) == ("pre", "preprocess")
    with pytest.raises(QueueError, match="kind"):
        store.add(cfg, kind="bake")


def test_bad_config_name_and_run_folder_name_the_field(store, add_fake, tmp_path):
    with pytest.raises(ConfigError, match="training.learning_rate"):
        store.add({"data": {"path": str(tmp_path)}, "training": {"learning_rate": -1}})
    with pytest.raises(ConfigError, match="job.name"):
        add_fake("../escape")
    first = add_fake("a", output_dir=str(tmp_path / "shared"))
    with pytest.raises(ConfigError, match="job.output_dir") as err:
        add_fake("b", output_dir=str(tmp_path / "shared"))
    assert f"job {first.id}" in str(err.value)


def test_move_reorders_pending_jobs_only(store, add_fake):
    a, _, c = add_fake("a"), add_fake("b"), add_fake("c")
    order = [j.name for j in store.move(c.id, 0)]
    assert order == ["c", "a", "b"]
    assert [j.name for j in store.move(c.id, -1)] == ["a", "b", "c"]
    assert store.claim_next("n1").name == "a"
    with pytest.raises(QueueError, match="only pending"):
        store.move(a.id, 1)


def test_remove_running_job_is_refused_clearly(store, add_fake):
    job = add_fake("busy")
    store.claim_next("nonce")
    with pytest.raises(QueueError) as err:
        store.remove(job.id)
    message = str(err.value)
    assert "running" in message and "stop it first" in message and f"queue stop {job.id}" in message
    assert store.get(job.id).status == "running"
    store.finish(job.id, "nonce", "failed")
    store.remove(job.id)
    assert store.list() == []


def test_stop_pending_and_running(store, add_fake):
    waiting, busy = add_fake("waiting"), add_fake("busy")
    store.move(busy.id, 0)
    store.claim_next("nonce")
    assert store.stop(waiting.id).status == "stopped"
    stopped = store.stop(busy.id)
    assert stopped.status == "running" and stopped.stop_requested
    assert (Path(busy.run_dir) / "control" / "STOP").exists()
    with pytest.raises(QueueError, match="nothing to stop"):
        store.stop(waiting.id)


def test_resume_retry_and_clone(store, add_fake, home):
    job = add_fake("orig")
    store.claim_next("n1")
    store.finish(job.id, "n1", "stopped")
    ran = store.get(job.id).duration_s
    later = add_fake("later")
    resumed = store.resume(job.id)
    assert (resumed.status, resumed.launch, resumed.duration_s) == ("pending", "resume", ran)
    assert [j.name for j in store.list(("pending",))] == ["later", "orig"]  # re-queued at the end
    store.claim_next("n2") and store.finish(later.id, "n2", "completed")
    store.claim_next("n3") and store.finish(job.id, "n3", "completed")
    with pytest.raises(QueueError, match="retry"):
        store.resume(job.id)
    assert store.retry(job.id).launch == "retry"
    copy = store.clone(job.id)
    assert copy.name == "orig_2" and copy.status == "pending"
    assert Path(copy.run_dir) == home / "runs" / "orig_2"
    assert copy.config["job"]["run_name"] == job.config["job"]["run_name"]


def _started_ago(store, job_id: int, seconds: float) -> None:
    """Make the running launch of a job look `seconds` old (a real launch would have to wait that long)."""
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE jobs SET started_at = ? WHERE id = ?", (time.time() - seconds, job_id))


def test_duration_sums_every_launch_of_a_resumed_job(store, add_fake):
    from studio.queue.cli import format_duration

    job = add_fake("long")
    store.claim_next("n1")
    _started_ago(store, job.id, 8 * 60)  # it ran 8 minutes, then was stopped
    store.finish(job.id, "n1", "stopped")
    store.resume(job.id)
    store.claim_next("n2")
    _started_ago(store, job.id, 25)  # the resumed launch ran 25 s
    running = JobStore(store.path).get(job.id)  # a fresh reader of the same database file
    assert running.duration_s == pytest.approx(8 * 60 + 25, abs=2)
    store.finish(job.id, "n2", "completed")
    assert format_duration(store.get(job.id).duration_s) == "0:08:25"
    store.retry(job.id)  # a retry starts the run again: its time starts again too
    store.claim_next("n3")
    _started_ago(store, job.id, 5)
    assert store.get(job.id).duration_s == pytest.approx(5, abs=2)


def test_database_without_the_duration_column_is_upgraded(store, add_fake):
    job = add_fake("old")
    with sqlite3.connect(store.path) as conn:
        conn.execute("ALTER TABLE jobs DROP COLUMN earlier_s")
    reopened = JobStore(store.path)
    assert reopened.get(job.id).earlier_s == 0.0


def test_update_keeps_name_and_folder(store, add_fake):
    job = add_fake("edit", opts="steps=3")
    new = dict(job.config)
    new["job"] = {**job.config["job"], "run_name": "steps=7", "name": "other", "output_dir": "/elsewhere"}
    updated = store.update(job.id, new)
    assert updated.config["job"]["run_name"] == "steps=7"
    assert (updated.name, updated.run_dir) == (job.name, job.run_dir)


def test_finish_is_written_once_per_launch(store, add_fake):
    job = add_fake()
    store.claim_next("n1")
    assert store.finish(job.id, "wrong-nonce", "completed") is False
    assert store.finish(job.id, "n1", "completed", exit_code=0, final_loss=0.5) is True
    assert store.finish(job.id, "n1", "failed") is False
    assert store.get(job.id).status == "completed"


def test_concurrent_claims_never_share_a_job(store, add_fake):
    for i in range(3):
        add_fake(f"j{i}")
    barrier = threading.Barrier(6)

    def claim(nonce: str):
        barrier.wait()  # all six hit the database together, each on its own connection
        job = JobStore(store.path).claim_next(nonce)
        return job.id if job else None

    with ThreadPoolExecutor(6) as pool:
        claimed = list(pool.map(claim, [f"n{i}" for i in range(6)]))
    winners = [c for c in claimed if c is not None]
    assert len(winners) == 1  # one job at a time, and that job claimed once
    assert [j.status for j in store.list()] == ["running", "pending", "pending"]


def test_settings_defaults_and_validation(store):
    assert store.get_setting("queue.auto_resume_interrupted") is True
    store.set_setting("queue.auto_resume_interrupted", False)
    assert store.get_setting("queue.auto_resume_interrupted") is False
    with pytest.raises(ConfigError, match="queue.auto_resume_interrupted"):
        store.set_setting("queue.auto_resume_interrupted", "yes")
    with pytest.raises(ConfigError, match="queue.nope"):
        store.set_setting("queue.nope", 1)
