"""The Queue tab's actions on the selected job, and which job a fresh page shows."""
from __future__ import annotations

import time

from studio.queue import JobStore
from studio.ui.context import StudioContext
from studio.ui.jobs import LastProgress, default_job_id, queue_frame, styled
from studio.ui.tabs.queue import ALLOWED, run_action
from studio.ui.train_actions import preset_config


def mark_running(store: JobStore, job_id: int) -> None:
    with store._tx() as conn:  # what the worker does when it launches the job
        conn.execute("UPDATE jobs SET status='running', started_at=? WHERE id=?", (time.time(), job_id))


def test_actions_follow_the_job_status(home):
    ctx = StudioContext(store=JobStore())
    config = preset_config("tiny-sd15-lora")
    a, b, c = (ctx.store.add(config).id for _ in range(3))
    assert "place 2" in run_action(ctx, "up", c)
    assert [j.id for j in ctx.store.list(("pending",))] == [a, c, b]
    run_action(ctx, "down", a)
    assert [j.id for j in ctx.store.list(("pending",))] == [c, a, b]
    mark_running(ctx.store, c)
    assert "Error" in run_action(ctx, "remove", c) and "stop it first" in run_action(ctx, "remove", c)
    assert "remove" not in [k for k, v in ALLOWED.items() if "running" in v]
    assert "stop requested" in run_action(ctx, "stop", c)
    assert "stopped" in run_action(ctx, "stop", b) and ctx.store.get(b).status == "stopped"
    assert "resume" in run_action(ctx, "resume", b) and ctx.store.get(b).launch == "resume"
    assert "removed" in run_action(ctx, "remove", a) and a not in [j.id for j in ctx.store.list()]
    assert run_action(ctx, "stop", None) == "Select a job first."


def test_a_fresh_page_shows_the_running_job(home):
    store = JobStore()
    config = preset_config("tiny-sd15-lora")
    first, second = store.add(config).id, store.add(config).id
    assert default_job_id(store) == second  # nothing ran yet: the newest
    mark_running(store, first)
    assert default_job_id(store) == first


def test_status_colours(home):
    store = JobStore()
    store.add(preset_config("tiny-sd15-lora"))
    html = styled(queue_frame(store, LastProgress())).to_html()
    assert "background-color: #dbeafe" in html  # pending is blue


def test_refreshes_keep_the_users_pick_unless_the_job_is_gone(home):
    """A timer refresh carries the pick it started with: it must never send that value back (it would
    undo a pick made while it was in flight); only a job that disappeared gets a new value."""
    from studio.ui.live import RunFeed
    from studio.ui.tabs.monitor import monitor_tick
    from studio.ui.tabs.queue import queue_refresh

    ctx = StudioContext(store=JobStore())
    config = preset_config("tiny-sd15-lora")
    first, second = ctx.store.add(config).id, ctx.store.add(config).id
    feed = RunFeed()
    picker = monitor_tick(ctx, first, feed)[0]
    assert picker.get("choices") and "value" not in picker  # new list, the pick left alone
    mark_running(ctx.store, second)  # a status change relabels the list
    picker = monitor_tick(ctx, first, feed)[0]
    assert "value" not in picker and ("#2" in str(picker["choices"]) and "running" in str(picker["choices"]))
    assert "value" not in queue_refresh(ctx, LastProgress(), first, "")[2]
    with ctx.store._tx() as conn:
        conn.execute("UPDATE jobs SET status='stopped' WHERE id=?", (second,))
    ctx.store.remove(first)
    assert monitor_tick(ctx, first, feed)[0]["value"] == second  # the picked job is gone: the newest
    assert queue_refresh(ctx, LastProgress(), first, "")[2]["value"] == second


def test_queue_options_set_the_gpu_pool(home):
    from studio.ui.tabs.queue import save_setting

    ctx = StudioContext(store=JobStore())
    assert "Saved" in save_setting(ctx, "queue.gpus", "0,1")
    assert ctx.store.get_setting("queue.gpus") == "0,1"
    assert "Error" in save_setting(ctx, "queue.gpus", "0,x") and ctx.store.get_setting("queue.gpus") == "0,1"
    assert "Saved" in save_setting(ctx, "queue.cpu_jobs", 2.0) and ctx.store.get_setting("queue.cpu_jobs") == 2
