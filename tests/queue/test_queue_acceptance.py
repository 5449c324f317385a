"""Acceptance: the real tiny preset through the real CLI and trainer (tens of seconds each).

Selected with `-m slow`, and part of the default run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from queue_helpers import read_events, wait_for

from studio.queue import JobStore, Worker, commands, procs
from studio.queue.cli import main

PRESET = commands.PROJECT_ROOT / "presets" / "tiny-sd15-lora.json"
# Short runs: the point is the queue, not the model. Sampling off keeps each launch to seconds.
FAST = ["--set", "sampling.prompts=[]", "--set", "sampling.at_end=false", "--set", "logging.logging_steps=1",
        "--set", "logging.tensorboard=false", "--set", "dataloader.num_workers=0"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not PRESET.exists(), reason="needs presets/tiny-sd15-lora.json")]


def _queue_cli(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "STUDIO_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "studio", "queue", *args], cwd=commands.PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _add(*args: str) -> None:
    assert main(["add", str(PRESET), *FAST, *args]) == 0


def _events(job, name: str) -> list[dict]:
    return [e for e in read_events(job.run_dir) if e.get("event") == name]


def _stepping(store: JobStore, job) -> bool:
    """True once the job logged a step; fails at once if it ended before that."""
    current = store.get(job.id)
    assert current.status in ("pending", "running"), (current.status, current.error)
    return any("loss" in e for e in read_events(job.run_dir))


def test_worker_sigkilled_during_second_job(home, tmp_path, capsys):
    """Three jobs; the worker is SIGKILLed while the second runs and started again: all three end
    `completed`, each run exactly once, in order. The first is a preprocess job that builds the
    dataset cache the two training jobs then train from (a chain)."""
    cache = ["--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.stale_cache=error"]
    _add("--kind", "preprocess", "--name", "prep", *cache)
    _add("--name", "second", "--set", "training.max_steps=3", *cache)
    _add("--name", "third", "--set", "training.max_steps=1", *cache)
    store = JobStore()
    jobs = store.list()

    first_worker = _queue_cli(home, "run", "--until-empty", "--poll", "0.2")
    wait_for(lambda: _stepping(store, jobs[1]), timeout=150, what="the second job's first step")
    first_worker.send_signal(signal.SIGKILL)
    first_worker.wait(10)
    assert store.get(jobs[1].id).status == "running"

    second_worker = _queue_cli(home, "run", "--until-empty", "--poll", "0.2")
    out, _ = second_worker.communicate(timeout=240)
    assert second_worker.returncode == 0, out
    done = [store.get(j.id) for j in jobs]
    assert [j.status for j in done] == ["completed"] * 3, [(j.name, j.status, j.error) for j in done]
    for job in done:
        assert len(_events(job, "done")) == 1 and job.attempts == 1
        assert procs.job_processes(job.nonce) == []
    for job in done[1:]:
        assert len(_events(job, "loading")) == 1  # trained once: the killed worker's job was adopted
        assert f"training from the cache in {tmp_path / 'cache'}" in Path(job.run_dir, "console.log").read_text()
    assert done[0].finished_at <= done[1].started_at and done[1].finished_at <= done[2].started_at
    summary = out[out.index("final loss"):]
    assert "2 second" in summary and "3 third" in summary and "completed" in summary  # adopted job included
    assert f"{done[2].final_loss:.4g}" in summary and done[2].run_dir in summary


def test_stop_with_dataloader_workers_then_resume(home, capsys):
    """Stop during training: `stopped`, a committed checkpoint, no process left (the job had two
    DataLoader workers); resume continues from that checkpoint to the end."""
    # Enough steps that the stop lands mid-run even on an idle machine (a step takes ~0.1 s there).
    _add("--name", "stopme", "--set", "training.max_steps=60", "--set", "dataloader.num_workers=2",
         "--set", "dataloader.persistent_workers=true", "--set", "checkpointing.save_steps=1000")
    store = JobStore()
    job = store.list()[0]
    worker = Worker(store, poll_s=0.2)
    thread = threading.Thread(target=worker.run_until_empty)
    thread.start()
    wait_for(lambda: _stepping(store, job), timeout=150, what="the first step")
    nonce = store.get(job.id).nonce
    assert len(procs.job_processes(nonce)) >= 3  # the trainer and its two DataLoader workers
    store.stop(job.id)
    thread.join(120)
    stopped = store.get(job.id)
    assert stopped.status == "stopped" and stopped.exit_code == 0, stopped.error
    step = _events(stopped, "stopped")[-1]["step"]
    assert 1 <= step < 60
    assert (Path(job.run_dir) / f"checkpoint-{step}" / "manifest.json").is_file()
    assert procs.job_processes(nonce) == []

    store.resume(job.id)
    worker.run_until_empty()
    resumed = store.get(job.id)
    assert resumed.status == "completed", resumed.error
    assert _events(resumed, "resumed")[-1]["step"] == step
    steps = [e["step"] for e in read_events(job.run_dir) if "loss" in e]
    assert steps == list(range(1, 61))  # continued from the checkpoint: no step twice, none skipped
    assert procs.job_processes(resumed.nonce) == []
