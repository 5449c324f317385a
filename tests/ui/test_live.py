"""The Monitor's incremental reading, the Train tab's live estimates, the queue table, TensorBoard."""
from __future__ import annotations

import json
import time
import urllib.request

from studio.ui.estimates import estimate
from studio.ui.jobs import LastProgress, queue_frame
from studio.ui.live import RunFeed, loss_frame, lr_frame, progress_html, read_new_console, read_new_progress
from studio.ui.train_actions import preset_config


def append(path, *records):
    with open(path, "a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(rec if isinstance(rec, str) else json.dumps(rec) + "\n")


def step(n, loss=1.0, total=20):
    return {"step": n, "total": total, "epoch": 0, "loss": loss, "lr": 1e-3, "elapsed_s": n, "eta_s": total - n}


def test_feed_reads_only_what_was_appended(tmp_path):
    log = tmp_path / "progress.jsonl"
    append(log, {"event": "start", "step": 0}, step(5, 0.9), step(10, 0.8))
    feed = RunFeed(job_id=1, run_dir=str(tmp_path))
    assert read_new_progress(feed)
    assert [s for s, _, _ in feed.steps] == [5, 10]
    offset = feed.progress_offset
    assert not read_new_progress(feed) and feed.progress_offset == offset  # nothing new: nothing read
    append(log, step(15, 0.7), '{"step": 20, "tot')  # the trainer is mid-write on the last line
    assert read_new_progress(feed)
    assert [s for s, _, _ in feed.steps] == [5, 10, 15]
    assert feed.progress_offset == offset + len(json.dumps(step(15, 0.7))) + 1  # the half line waits
    append(log, 'al": 20, "loss": 0.6, "lr": 0.001}\n', {"event": "checkpoint", "step": 20, "path": "/r/checkpoint-20"},
           {"event": "done", "step": 20})
    read_new_progress(feed)
    assert feed.last["step"] == 20 and feed.final["event"] == "done"
    assert any("checkpoint-20" in e for e in feed.events)
    assert list(loss_frame(feed)["step"]) == [5, 10, 15, 20]
    assert "step <b>20</b> / 20" in progress_html(feed, "completed")
    # a new page (a new feed) sees the whole run: re-attach
    again = RunFeed(job_id=1, run_dir=str(tmp_path))
    read_new_progress(again)
    assert again.steps == feed.steps


def test_the_loss_chart_has_every_step_between_logging_steps(tmp_path):
    """Each record carries its steps' own losses: the chart draws them (a point per step) beside the
    logging window's mean; with logging every step the two would be the same line, so one is drawn."""
    log = tmp_path / "progress.jsonl"
    append(log, {**step(3, 0.5), "step_losses": [0.6, 0.5, 0.4]}, {"step": 4, "total": 20, "epoch": 0},
           {**step(6, 0.2), "step_losses": [0.3, 0.2, 0.1]})
    feed = RunFeed(job_id=1, run_dir=str(tmp_path))
    read_new_progress(feed)
    frame = loss_frame(feed)
    each = frame[frame["series"] == "train, each step"]
    assert list(each["step"]) == [1, 2, 3, 4, 5, 6] and list(each["loss"]) == [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert list(frame[frame["series"] == "train"]["step"]) == [3, 6]
    assert list(lr_frame(feed)["step"]) == [3, 6]  # a tick without the learning rate adds no point
    append(log, {"step": 7, "total": 20, "epoch": 0, "lr": 5e-4})
    read_new_progress(feed)
    assert list(lr_frame(feed)["step"]) == [3, 6]  # up to the newest loss point: the charts share their x range
    append(log, {**step(8, 0.1), "lr": 2e-4, "step_losses": [0.1, 0.1]},
           {"event": "saved", "step": 8, "format": "kohya", "path": "/r/x_kohya.safetensors", "verified": True})
    read_new_progress(feed)
    assert list(lr_frame(feed)["learning rate"]) == [1e-3, 1e-3, 5e-4, 2e-4]  # ticks carry it: every step
    assert feed.events[-1] == "step 8: saved kohya x_kohya.safetensors, checked"
    every = tmp_path / "every"
    every.mkdir()
    append(every / "progress.jsonl", *({**step(n, 0.5), "step_losses": [0.5]} for n in (1, 2)))
    feed = RunFeed(job_id=2, run_dir=str(every))
    read_new_progress(feed)
    assert set(loss_frame(feed)["series"]) == {"train"}


def test_charts_are_sent_when_their_points_change_and_once_more(tmp_path):
    """A tick without new points sends no chart, except the one right after a change: Gradio's chart drops
    data that arrives while it rebuilds for a new x range, so the last change is sent again."""
    from studio.ui.live import charts_due

    log = tmp_path / "progress.jsonl"
    feed = RunFeed(job_id=1, run_dir=str(tmp_path))
    read_new_progress(feed)
    assert charts_due(feed, fresh=True) and charts_due(feed, fresh=False)  # a new page, then once more
    assert not charts_due(feed, fresh=False)
    append(log, step(5, 0.9))
    read_new_progress(feed)
    assert charts_due(feed, fresh=False) and charts_due(feed, fresh=False) and not charts_due(feed, fresh=False)
    append(log, {"step": 6, "total": 20, "epoch": 0, "lr": 1e-3})  # a tick: no new chart point
    read_new_progress(feed)
    assert not charts_due(feed, fresh=False)


def test_feed_starts_over_when_the_log_is_replaced(tmp_path):
    log = tmp_path / "progress.jsonl"
    append(log, step(5), step(10), step(15))
    feed = RunFeed(job_id=1, run_dir=str(tmp_path))
    read_new_progress(feed)
    log.write_text(json.dumps(step(1)) + "\n")  # a retry archived the old log
    read_new_progress(feed)
    assert [s for s, _, _ in feed.steps] == [1]


def test_console_tail(tmp_path):
    console = tmp_path / "console.log"
    console.write_text("".join(f"line {i}\n" for i in range(5000)) + "partial")
    feed = RunFeed(job_id=1, run_dir=str(tmp_path))
    assert read_new_console(feed)
    assert feed.console[-1] == "line 4999" and len(feed.console) <= 300  # only the tail; no half line
    append(console, " done\n", "epoch 1 10%\repoch 1 50%\repoch 1 100%\n")
    assert read_new_console(feed)
    assert feed.console[-2:] == ["partial done", "epoch 1 100%"]


def test_estimates_for_the_tiny_preset(home):
    est = estimate(preset_config("tiny-sd15-lora"))
    assert est.automatic_name and est.job_name.startswith("sd15_")
    assert est.effective_batch == 2 and est.total_steps == 20
    assert est.checkpoints == 2 and est.kept_checkpoints == 2
    config = preset_config("tiny-sd15-lora")
    config["training"].update(max_steps=0, epochs=3, gradient_accumulation_steps=2)
    est = estimate(config)  # 8 demo pictures, batch 2, accumulate 2 -> 2 steps per epoch
    assert est.items == 8 and est.steps_per_epoch == 2 and est.total_steps == 6 and est.effective_batch == 4


def test_queue_table_shows_progress_and_status(home):
    from studio.queue import JobStore

    store = JobStore()
    job = store.add(preset_config("tiny-sd15-lora"))
    run = __import__("pathlib").Path(job.run_dir)
    run.mkdir(parents=True)
    append(run / "progress.jsonl", step(10, 0.5))
    with store._tx() as conn:  # as the worker would mark it
        conn.execute("UPDATE jobs SET status='running', started_at=?, gpus='2,3' WHERE id=?", (time.time(), job.id))
    frame = queue_frame(store, LastProgress())
    row = frame.iloc[0]
    assert row["Status"] == "running" and row["Progress"] == "10/20 (50 %)" and row["Loss"] == "0.5000"
    assert row["GPUs"] == "2,3"  # the GPUs of the worker's pool this job holds


def test_tensorboard_runs_on_a_free_local_port_and_stops(tmp_path):
    from studio.ui.tensorboard import TensorBoardManager, delete_event_files

    logs = tmp_path / "runs"
    logs.mkdir()
    (logs / "events.out.tfevents.1.host").write_bytes(b"")
    manager = TensorBoardManager()
    proc = manager.launch(logs)
    try:
        assert manager.launch(logs) is proc  # one per folder
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(proc.url, timeout=5) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.alive(), "TensorBoard exited"
                time.sleep(1)
        else:
            raise AssertionError("TensorBoard did not answer")
    finally:
        manager.stop_all()
    assert not proc.alive()
    assert delete_event_files(logs) == 1 and not list(logs.iterdir())


def test_per_step_ticks_move_progress_and_keep_the_loss(tmp_path):
    """The trainer writes a tick (no loss) at every step between `logging_steps` records."""
    from studio.runfolder.progress import ProgressLog

    progress = ProgressLog(tmp_path, total_steps=4)
    progress.step(1, 0, 0.5, 1e-3)
    progress.tick(2, 0)
    progress.tick(3, 0)
    progress.close()
    feed = RunFeed(job_id=1, run_dir=str(tmp_path))
    read_new_progress(feed)
    assert feed.last["step"] == 3 and feed.last["loss"] == 0.5
    assert [s for s, _, _ in feed.steps] == [1]  # the loss chart only gets real losses
    assert "step <b>3</b> / 4" in progress_html(feed, "running") and "loss 0.5000" in progress_html(feed, "running")
    assert LastProgress().get(str(tmp_path))["step"] == 3


def test_after_the_last_step_the_monitor_says_what_the_run_is_doing(tmp_path):
    append(tmp_path / "progress.jsonl", step(20, 0.5), {"event": "sample", "step": 20, "prompt": "p"})
    feed = RunFeed(job_id=1, run_dir=str(tmp_path))
    read_new_progress(feed)
    html = progress_html(feed, "running")
    assert "training done: rendering the final samples" in html and "ETA" not in html


def test_console_shows_the_studios_lines_and_errors_first():
    from studio.ui.live import console_text

    feed = RunFeed(console=[
        "=== queue: job 1 'x' launch 1 (fresh) at 2026-11-30 03:04:55: python -m studio train c.json",
        "There are modules in AutoencoderKL that should be kept in float32: [].",
        "No LoRA keys associated to CLIPTextModel found with the prefix='text_encoder'. ... open an issue",
        "2026-11-30 03:05:28,314 INFO studio.adapters: peft export OK",
        "Traceback (most recent call last):", '  File "x.py", line 1', "ValueError: boom"])
    own = console_text(feed, everything=False)
    assert "float32" not in own and "No LoRA keys" not in own and "2 library line(s) hidden" in own
    assert "=== queue" in own and "peft export OK" in own and "ValueError: boom" in own and 'File "x.py"' in own
    assert "No LoRA keys" in console_text(feed, everything=True)


def test_a_lone_point_is_drawn_and_the_axis_starts_at_the_first_step():
    """A line needs two points: a chart with one logged step draws it as a point; the x axis spans
    the steps shown instead of starting at 0."""
    import pandas as pd

    from studio.ui.step_plot import StepPlot, plot_update

    plot = StepPlot(x="step", y="loss", color="series")
    one = pd.DataFrame([(5, 0.3, "train")], columns=["step", "loss", "series"])
    assert plot.postprocess(one).mark == "point"
    two = pd.DataFrame([(5, 0.3, "train"), (6, 0.2, "train")], columns=["step", "loss", "series"])
    assert plot.postprocess(two).mark == "line"
    mixed = pd.concat([two, pd.DataFrame([(4, 0.5, "eval")], columns=two.columns)])
    assert plot.postprocess(mixed).mark == "point"  # the run with one point is not left out
    assert plot_update(two, "series")["x_lim"] == [5, 6] and plot_update(one, "series")["x_lim"] == [4, 6]
    assert plot_update(mixed, "series")["x_lim"] == [3, 7]  # points get a margin: none is cut in half
