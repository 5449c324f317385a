"""Crash and restart: a killed worker, jobs that die unwatched, recycled pids, racing workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from queue_helpers import FAKE_TRAINER, fake_worker_cmd, launches, read_events, wait_for

from studio.queue import commands, procs
from studio.queue.reconcile import reconcile
from studio.runfolder import write_config


def _spawn_worker(home: Path, log: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "STUDIO_HOME": str(home)}
    stderr = open(log, "w") if log else None
    return subprocess.Popen(fake_worker_cmd(), env=env, cwd=str(commands.PROJECT_ROOT), stderr=stderr)


def test_worker_killed_mid_job_then_restarted_runs_each_job_once_in_order(store, add_fake, home, tmp_path):
    jobs = [add_fake(f"job{i}", "steps=20,sleep=0.02" + (",hold=1" if i == 1 else "")) for i in range(3)]
    first = _spawn_worker(home)
    wait_for(lambda: len(read_events(jobs[1].run_dir)) >= 3, what="the second job to be running")
    first.send_signal(signal.SIGKILL)  # no cleanup at all, like a crash or `kill -9`
    first.wait(10)
    assert store.get(jobs[1].id).status == "running"
    log = tmp_path / "worker2.log"
    second = _spawn_worker(home, log)
    # The second job holds before its final event until released: it is still running when the
    # new worker starts, so this checks adoption, not a job that happened to end in between.
    wait_for(lambda: f"job {jobs[1].id} 'job1' is still running" in log.read_text(), what="adoption")
    Path(jobs[1].run_dir, "RELEASE").touch()
    assert second.wait(60) == 0
    done = [store.get(j.id) for j in jobs]
    assert [j.status for j in done] == ["completed"] * 3
    assert [len(launches(j.run_dir)) for j in done] == [1, 1, 1]  # the second was adopted, not re-run
    assert [j.attempts for j in done] == [1, 1, 1]
    for job in done:
        assert [e.get("event") for e in read_events(job.run_dir)].count("done") == 1
    assert done[0].finished_at <= done[1].started_at and done[1].finished_at <= done[2].started_at


def _claim_and_spawn(store, job) -> subprocess.Popen:
    """Do what a worker does at launch, then "die": the row stays running, the pid unrecorded."""
    nonce = f"nonce-{job.id}"
    claimed = store.claim_next(nonce)
    config_path = write_config(Path(job.run_dir), claimed.config)
    return subprocess.Popen([sys.executable, str(FAKE_TRAINER), "train", str(config_path)],
                            env=commands.job_env(nonce), start_new_session=True)


def test_job_that_died_unwatched_is_interrupted_then_resumed(store, add_fake, worker):
    job = add_fake("orphan", "steps=200,sleep=0.02,ckpt_every=5")
    proc = _claim_and_spawn(store, job)
    store.record_launch(job.id, f"nonce-{job.id}", pid=proc.pid, proc_start=psutil.Process(proc.pid).create_time())
    wait_for(lambda: Path(job.run_dir, "checkpoint-10").exists(), what="a checkpoint")
    proc.kill()
    proc.wait()
    store.set_setting("queue.auto_resume_interrupted", False)
    alive, settled = reconcile(store)
    assert alive == [] and [(j.id, j.status) for j in settled] == [(job.id, "interrupted")]

    store.set_setting("queue.auto_resume_interrupted", True)
    store.resume(job.id)
    store.update(job.id, {**job.config, "job": {**job.config["job"], "run_name": "steps=200,sleep=0"}})
    worker.run_until_empty()
    job = store.get(job.id)
    assert job.status == "completed" and job.attempts == 2
    resumed_from = launches(job.run_dir)[-1][1]
    assert resumed_from >= 10 and resumed_from % 5 == 0


def test_auto_resume_requeues_interrupted_jobs_in_place(store, add_fake):
    add_fake("crashed", "steps=5"), add_fake("later", "steps=5")
    store.claim_next("lost-nonce")  # the worker died before it could even spawn the job
    assert reconcile(store) == ([], [])  # nothing to adopt; re-queued, so not settled
    pending = store.list(("pending",))
    assert [j.name for j in pending] == ["crashed", "later"]  # ahead of the jobs queued after it
    assert pending[0].launch == "resume" and "no worker" in pending[0].error


def test_job_that_finished_unwatched_is_completed_not_rerun(store, add_fake, worker):
    job = add_fake("quick", "steps=3")
    proc = _claim_and_spawn(store, job)
    assert proc.wait(10) == 0
    finished = worker.run_until_empty()
    assert [(j.id, j.status) for j in finished] == [(job.id, "completed")]  # settled, in the summary
    job = store.get(job.id)
    assert job.status == "completed" and len(launches(job.run_dir)) == 1


def test_recycled_pid_is_never_signalled(store, add_fake):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        job = add_fake("ghost")
        store.claim_next("ghost-nonce")
        # The row points at a live process that is not the job: right pid, no nonce.
        store.record_launch(job.id, "ghost-nonce", pid=stranger.pid,
                            proc_start=psutil.Process(stranger.pid).create_time())
        store.stop(job.id)
        assert reconcile(store)[0] == []
        assert store.get(job.id).status == "pending"  # interrupted, then auto-resumed
        assert procs.signal_job("ghost-nonce", signal.SIGKILL, stranger.pid) == 0
        time.sleep(0.2)
        assert stranger.poll() is None  # still alive: nothing was sent to it
    finally:
        stranger.kill()
        stranger.wait()


def test_unrecorded_pid_is_found_by_its_nonce_and_adopted(store, add_fake, worker):
    job = add_fake("unrecorded", "steps=30,sleep=0.02")
    proc = _claim_and_spawn(store, job)  # pid never written to the row
    wait_for(lambda: read_events(job.run_dir), what="the first step")
    alive, _ = reconcile(store)
    assert [(j.id, p.pid) for j, p in alive] == [(job.id, proc.pid)]
    assert store.get(job.id).pid == proc.pid
    assert [j.status for j in worker.run_until_empty()] == ["completed"]
    proc.wait(5)


def test_two_workers_started_at_once_never_run_a_job_twice(store, add_fake, home):
    jobs = [add_fake(f"race{i}", "steps=5") for i in range(4)]
    workers = [_spawn_worker(home) for _ in range(2)]
    for w in workers:
        w.wait(60)
    wait_for(lambda: all(store.get(j.id).status == "completed" for j in jobs), timeout=30,
             what="all jobs completed")
    assert [len(launches(j.run_dir)) for j in jobs] == [1, 1, 1, 1]


def test_stop_reaches_an_adopted_job(store, add_fake, worker):
    job = add_fake("adopted", "steps=3000,sleep=0.02")
    proc = _claim_and_spawn(store, job)
    wait_for(lambda: read_events(job.run_dir), what="the first step")
    thread = threading.Thread(target=worker.run_until_empty)
    thread.start()
    wait_for(lambda: store.get(job.id).pid == proc.pid, what="the worker to adopt the job")
    store.stop(job.id)
    thread.join(30)
    proc.wait(5)
    job = store.get(job.id)
    assert job.status == "stopped" and job.exit_code is None  # not our child: the event decides
    step = read_events(job.run_dir)[-1]["step"]
    assert (Path(job.run_dir) / f"checkpoint-{step}" / "manifest.json").exists()


def test_ctrl_c_stops_the_current_job_and_exits(store, add_fake, home):
    job, later = add_fake("interrupted_by_user", "steps=3000,sleep=0.02"), add_fake("not_started", "steps=2")
    runner = _spawn_worker(home)
    wait_for(lambda: read_events(job.run_dir), what="the first step")
    runner.send_signal(signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground process
    assert runner.wait(30) == 0
    assert store.get(job.id).status == "stopped"
    assert store.get(later.id).status == "pending"  # the queue stopped claiming after Ctrl-C
    assert procs.job_processes(store.get(job.id).nonce) == []
