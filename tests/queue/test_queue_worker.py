"""The worker with a stand-in trainer: statuses from exit code + last event, stop escalation,
leftover processes, resume and retry."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from queue_helpers import launches, read_events, wait_for

from studio.queue import procs
from studio.runfolder import Outcome
from studio.queue.worker import WorkerBusy, decide_status


def test_jobs_run_in_order_and_a_failure_does_not_stop_the_queue(store, worker, add_fake):
    a = add_fake("a", "steps=3")
    bad = add_fake("bad", "steps=4,mode=crash")
    c = add_fake("c", "steps=3")
    finished = worker.run_until_empty()
    assert [j.name for j in finished] == ["a", "bad", "c"]
    assert [store.get(j.id).status for j in (a, bad, c)] == ["completed", "failed", "completed"]
    assert store.get(a.id).started_at < store.get(bad.id).started_at < store.get(c.id).started_at
    failed = store.get(bad.id)
    assert failed.exit_code == 3 and "crashed on purpose" in failed.error
    done = store.get(a.id)
    assert done.exit_code == 0 and done.final_loss == pytest.approx(1 / 3) and done.attempts == 1
    config = Path(a.run_dir, "config.json")
    assert config.exists() and "step 3/3" in Path(a.run_dir, "console.log").read_text()


def test_exit_zero_without_done_event_is_not_completed(store, worker, add_fake):
    job = add_fake("quiet", "steps=3,mode=no_done")
    worker.run_until_empty()
    job = store.get(job.id)
    assert job.status == "failed" and job.exit_code == 0
    assert "without a final 'done' event" in job.error


@pytest.mark.parametrize(
    "exit_code, event, signals, expected",
    [(0, "done", [], "completed"), (0, "stopped", [], "stopped"), (0, "checkpoint", [], "failed"),
     (0, None, [], "failed"), (1, "done", [], "failed"), (1, "error", [], "failed"),
     (-9, None, ["SIGTERM", "SIGKILL"], "stopped"), (-11, None, [], "failed"), (None, "done", [], "completed")],
)
def test_decide_status(exit_code, event, signals, expected):
    status, _ = decide_status(exit_code, Outcome(event, "", None), signals, adopted=exit_code is None)
    assert status == expected


def _run_in_thread(worker):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("jobs", worker.run_until_empty()))
    thread.start()
    return thread, result


def test_stop_saves_a_checkpoint_and_resume_continues_from_it(store, worker, add_fake):
    job = add_fake("long", "steps=300,sleep=0.02,children=2")
    thread, _ = _run_in_thread(worker)
    wait_for(lambda: len(read_events(job.run_dir)) >= 5, what="a few steps")
    nonce = store.get(job.id).nonce
    assert len(procs.job_processes(nonce)) == 3  # the trainer and its two lingering children
    store.stop(job.id)
    thread.join(30)
    stopped = store.get(job.id)
    assert stopped.status == "stopped" and stopped.error is None
    step = read_events(job.run_dir)[-1]["step"]
    assert (Path(job.run_dir) / f"checkpoint-{step}" / "manifest.json").exists()
    assert procs.job_processes(nonce) == []  # children killed even outside the process group

    store.update(job.id, {**job.config, "job": {**job.config["job"], "run_name": "steps=300,sleep=0"}})
    store.resume(job.id)
    worker.run_until_empty()
    resumed = store.get(job.id)
    assert resumed.status == "completed" and resumed.attempts == 2
    assert [start for _, start in launches(job.run_dir)] == [0, step]
    steps = [e["step"] for e in read_events(job.run_dir) if "loss" in e]
    assert steps == list(range(1, 301))  # no step run twice, none skipped


def test_stubborn_trainer_is_terminated_then_killed(store, worker, add_fake):
    store.set_setting("queue.stop_grace_s", 0.3)
    store.set_setting("queue.kill_grace_s", 0.3)
    job = add_fake("stubborn", "steps=2000,sleep=0.02,mode=stubborn,children=1")
    thread, _ = _run_in_thread(worker)
    wait_for(lambda: read_events(job.run_dir), what="the first step")
    nonce = store.get(job.id).nonce
    store.stop(job.id)
    thread.join(30)
    job = store.get(job.id)
    assert job.status == "stopped" and job.exit_code == -9
    assert "SIGTERM/SIGKILL" in job.error
    assert procs.job_processes(nonce) == []


def test_retry_archives_the_previous_attempt(store, worker, add_fake):
    job = add_fake("again", "steps=6,ckpt_every=2")
    worker.run_until_empty()
    store.retry(job.id)
    worker.run_until_empty()
    run_dir = Path(job.run_dir)
    assert store.get(job.id).status == "completed"
    assert [start for _, start in launches(run_dir)] == [0, 0]
    archived = run_dir / "attempts" / "1"
    assert sorted(p.name for p in archived.iterdir()) == ["checkpoint-2", "checkpoint-4", "checkpoint-6",
                                                          "progress.jsonl"]
    assert [e.get("event") for e in read_events(run_dir)].count("done") == 1


def test_leaving_run_forever_leaves_the_job_to_the_next_worker(store, worker, add_fake):
    job = add_fake("detached", "steps=60,sleep=0.02")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    wait_for(lambda: read_events(job.run_dir), what="the first step")
    stop.set()
    thread.join(10)
    assert store.get(job.id).status == "running"  # nobody killed it
    finished = worker.run_until_empty()  # the next worker adopts it and records the end
    assert [j.status for j in finished] == ["completed"]
    assert len(launches(job.run_dir)) == 1


def test_second_worker_is_refused_while_one_runs(store, worker, add_fake):
    from studio.queue import Worker

    assert worker.lock.acquire()
    try:
        with pytest.raises(WorkerBusy, match="another queue worker"):
            Worker(store).run_until_empty()
    finally:
        worker.lock.release()
