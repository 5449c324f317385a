"""The GPU-aware queue: one queue, jobs side by side on disjoint GPUs of the worker's pool.

The machine has no CUDA; the pool is given as ids and the stand-in trainer reports the
CUDA_VISIBLE_DEVICES the worker gave it, so assignment, overlap and waiting are all observable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from queue_helpers import fake_worker_cmd, launches, read_events, wait_for

from studio.config import ConfigError
from studio.queue import procs
from studio.queue.gpus import parse_pool, schedule


def _visible(job) -> list[str]:
    """The CUDA_VISIBLE_DEVICES each launch of the job printed, in order."""
    text = Path(job.run_dir, "console.log").read_text()
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("CUDA_VISIBLE_DEVICES=")]


def _span(job) -> tuple[float, float]:
    """(first step, final event) wall-clock times from the job's progress file."""
    times = [e["time"] for e in read_events(job.run_dir)]
    return min(times), max(times)


def _launched_config(job) -> dict:
    return json.loads(Path(job.run_dir, "config.json").read_text())


@pytest.fixture
def add_gpu_job(add_fake, store):
    def add(name: str, opts: str, processes: int = 1, gpu_ids: str = ""):
        job = add_fake(name, opts)
        if processes > 1 or gpu_ids:
            config = json.loads(json.dumps(job.config))
            config["distributed"].update(num_processes=processes, gpu_ids=gpu_ids)
            job = store.update(job.id, config)
        return job
    return add


def test_schedule_is_first_fit_in_queue_order_with_reservation(store, add_gpu_job):
    one, two, three = add_gpu_job("one", ""), add_gpu_job("two", "", processes=2), add_gpu_job("three", "")
    exact = add_gpu_job("exact", "", gpu_ids="1")
    pending = store.list(("pending",))
    plan = schedule(pending, [], ["0", "1"])
    assert [(j.name, g) for j, g in plan.start] == [("one", ["0"])]  # two reserves 1: three/exact may not take it
    plan = schedule(pending, [], ["0", "1", "2"])
    assert [(j.name, g) for j, g in plan.start] == [("one", ["0"]), ("two", ["1", "2"])]
    plan = schedule([three, exact], [], ["0", "1"])
    assert [(j.name, g) for j, g in plan.start] == [("three", ["0"]), ("exact", ["1"])]
    store.claim(one.id, "n1", ["1"])  # a running job holds GPU 1
    plan = schedule([two, three, exact], store.list(("running",)), ["0", "1"])
    assert plan.start == []  # two waits for 1 and holds 0 for itself; exact wants the busy 1
    assert [(j.name, g) for j, g in schedule([exact, three], store.list(("running",)), ["0", "1"]).start] == \
        [("three", ["0"])]
    big = add_gpu_job("big", "", processes=3)
    wrong = add_gpu_job("wrong", "", gpu_ids="7")
    plan = schedule([big, wrong], [], ["0", "1"])
    assert plan.start == [] and [j.name for j, _ in plan.refuse] == ["big", "wrong"]
    assert "3 GPUs" in plan.refuse[0][1] and "GPU 7" in plan.refuse[1][1] and "0,1" in plan.refuse[1][1]
    # No pool: one job at a time, GPUs untouched, whatever the jobs ask.
    assert [(j.name, g) for j, g in schedule([two, three], [], None).start] == [("two", [])]
    assert schedule([three], [two], None).start == []
    # An empty pool (no CUDA device): every job is a CPU job, queue.cpu_jobs at a time.
    assert [j.name for j, _ in schedule([two, three], [], [], cpu_jobs=1).start] == ["two"]
    assert [j.name for j, _ in schedule([two, three], [], [], cpu_jobs=2).start] == ["two", "three"]


def test_pool_setting_and_option_are_checked(store, monkeypatch):
    assert parse_pool("") is None and parse_pool(" 0, 2 ") == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert parse_pool("auto") == ["3", "5"]  # what this worker may use is what it was given
    for bad in ("0,0", "a,b", "-1"):
        with pytest.raises(ConfigError, match="queue.gpus"):
            store.set_setting("queue.gpus", bad)
    store.set_setting("queue.gpus", 1)  # `queue settings gpus=1` reads 1 as JSON
    assert store.get_setting("queue.gpus") == "1"
    with pytest.raises(ConfigError, match="queue.cpu_jobs"):
        store.set_setting("queue.cpu_jobs", 0)


def test_jobs_share_the_pool_side_by_side_and_a_two_gpu_job_waits_for_both(store, add_gpu_job):
    from fake_trainer import command
    from studio.queue import Worker

    a = add_gpu_job("a", "steps=40,sleep=0.05")
    b = add_gpu_job("b", "steps=60,sleep=0.05")
    both = add_gpu_job("both", "steps=10,sleep=0.02", processes=2)
    c = add_gpu_job("c", "steps=5,sleep=0.02")  # queued after the 2-GPU job: must not overtake it
    finished = Worker(store, poll_s=0.05, command=command, gpus="0,1").run_until_empty()
    assert sorted(j.name for j in finished) == ["a", "b", "both", "c"]
    assert all(j.status == "completed" for j in finished)
    jobs = {j.name: store.get(j.id) for j in (a, b, both, c)}
    assert _visible(jobs["a"]) == ["0"] and _visible(jobs["b"]) == ["1"] and _visible(jobs["both"]) == ["0,1"]
    assert _launched_config(jobs["both"])["distributed"]["gpu_ids"] == "0,1"  # what accelerate's config gets
    assert _launched_config(jobs["a"])["distributed"]["gpu_ids"] == "0"
    spans = {name: _span(job) for name, job in jobs.items()}
    assert spans["a"][0] < spans["b"][1] and spans["b"][0] < spans["a"][1]  # a and b ran at the same time
    assert spans["both"][0] > max(spans["a"][1], spans["b"][1])  # waited until both GPUs were free
    assert spans["c"][0] > spans["both"][1]  # the reservation kept c from taking a freed GPU
    # Never over-committed: jobs that overlapped in time held disjoint GPUs.
    for x in jobs:
        for y in jobs:
            if x < y and spans[x][0] < spans[y][1] and spans[y][0] < spans[x][1]:
                assert not set(jobs[x].gpus.split(",")) & set(jobs[y].gpus.split(",")), (x, y)
    assert [jobs[n].gpus for n in ("a", "b", "both", "c")] == ["0", "1", "0,1", jobs["c"].gpus]
    assert all(job.gpu_list == [] for job in jobs.values())  # a finished job holds nothing


def test_two_multi_process_jobs_side_by_side_get_their_own_port(store, add_gpu_job):
    from fake_trainer import command
    from studio.queue import Worker

    x = add_gpu_job("x", "steps=20,sleep=0.05", processes=2)
    y = add_gpu_job("y", "steps=20,sleep=0.05", processes=2)
    Worker(store, poll_s=0.05, command=command, gpus="0,1,2,3").run_until_empty()
    cx, cy = _launched_config(store.get(x.id)), _launched_config(store.get(y.id))
    assert {cx["distributed"]["gpu_ids"], cy["distributed"]["gpu_ids"]} == {"0,1", "2,3"}
    assert cx["distributed"]["main_process_port"] != cy["distributed"]["main_process_port"]
    sx, sy = _span(store.get(x.id)), _span(store.get(y.id))
    assert sx[0] < sy[1] and sy[0] < sx[1]


def test_a_job_larger_than_the_pool_fails_with_the_reason_and_the_queue_goes_on(store, add_gpu_job):
    from fake_trainer import command
    from studio.queue import Worker

    big = add_gpu_job("big", "", processes=3)
    ok = add_gpu_job("ok", "steps=3")
    finished = Worker(store, poll_s=0.05, command=command, gpus="0,1").run_until_empty()
    assert [j.name for j in finished] == ["big", "ok"]
    big = store.get(big.id)
    assert big.status == "failed" and "3 GPUs" in big.error and "0,1" in big.error and big.attempts == 0
    assert store.get(ok.id).status == "completed"


def test_without_a_pool_nothing_changes_one_job_at_a_time(store, add_gpu_job, monkeypatch):
    from fake_trainer import command
    from studio.queue import Worker

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    a, b = add_gpu_job("a", "steps=10,sleep=0.02"), add_gpu_job("b", "steps=10,sleep=0.02")
    Worker(store, poll_s=0.05, command=command).run_until_empty()
    a, b = store.get(a.id), store.get(b.id)
    assert _span(a)[1] < _span(b)[0]
    assert _visible(a) == _visible(b) == ["<unset>"] and a.gpus is None
    assert _launched_config(a)["distributed"]["gpu_ids"] == ""


def test_worker_killed_frees_the_gpus_of_dead_jobs_and_adopted_ones_keep_theirs(store, add_gpu_job, home):
    store.set_setting("queue.gpus", "0,1")  # the worker subprocess reads the pool from the setting
    a = add_gpu_job("a", "steps=5,sleep=0.01,hold=1")
    b = add_gpu_job("b", "steps=5,sleep=0.01,hold=1")
    both = add_gpu_job("both", "steps=3", processes=2)
    env = dict(os.environ, STUDIO_HOME=str(home))
    worker = subprocess.Popen(fake_worker_cmd(), env=env, cwd=Path(__file__).parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: all(len(read_events(j.run_dir)) >= 5 for j in (a, b)), what="a and b running")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
    a, b = store.get(a.id), store.get(b.id)
    assert (a.status, b.status) == ("running", "running") and {a.gpus, b.gpus} == {"0", "1"}
    for proc in procs.job_processes(a.nonce):  # a dies too while no worker watches (b survives)
        proc.kill()
    wait_for(lambda: not procs.job_processes(a.nonce), what="a's processes gone")

    from fake_trainer import command
    from studio.queue import Worker

    new = Worker(store, poll_s=0.05, command=command)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("jobs", new.run_until_empty()))
    thread.start()
    try:
        # reconcile: a is interrupted and re-queued in place; its GPU is free again and it restarts on
        # it; b is adopted and keeps GPU 1, so the 2-GPU job still waits.
        wait_for(lambda: len(launches(a.run_dir)) == 2, what="a relaunched")
        relaunched = store.get(a.id)
        assert relaunched.status == "running" and relaunched.gpus == a.gpus and relaunched.attempts == 2
        assert _visible(relaunched) == [a.gpus, a.gpus]
        assert store.get(b.id).gpus == b.gpus and store.get(both.id).status == "pending"
    finally:
        for job in (a, b):
            Path(job.run_dir, "RELEASE").touch()
        thread.join(60)
    assert {j.name for j in result["jobs"]} >= {"a", "b", "both"}
    assert [store.get(j.id).status for j in (a, b, both)] == ["completed"] * 3
    assert _span(store.get(both.id))[0] > max(_span(store.get(j.id))[1] for j in (a, b))
    assert _visible(store.get(both.id)) == ["0,1"]
