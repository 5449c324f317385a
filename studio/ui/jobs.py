"""Reading jobs for the tabs: choices for the job pickers, the queue table, and the newest progress
of each run (read incrementally: only the bytes appended since the last look)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pandas as pd

from studio.queue import Job, JobStore, QueueError
from studio.queue.cli import format_duration
from studio.runfolder import is_step, progress_path, read_progress

# FIELDS §20: pending blue, running and completed green, stopped orange, failed red.
STATUS_COLOURS = {"pending": "#dbeafe", "running": "#bbf7d0", "completed": "#dcfce7", "stopped": "#fed7aa",
                  "failed": "#fecaca", "interrupted": "#fde68a"}
STATUS_TEXT = {"pending": "#1e3a8a", "running": "#14532d", "completed": "#166534", "stopped": "#9a3412",
               "failed": "#991b1b", "interrupted": "#92400e"}
TABLE_COLUMNS = ["ID", "Name", "Kind", "Status", "GPUs", "Progress", "Loss", "Added", "Duration"]


def job_label(job: Job) -> str:
    return f"#{job.id} {job.name} ({job.status})"


def job_choices(store: JobStore) -> list[tuple[str, int]]:
    return [(job_label(j), j.id) for j in reversed(store.list())]


def default_job_id(store: JobStore) -> int | None:
    """The job a fresh page shows: the running one, else the most recently started or added."""
    jobs = store.list()
    running = [j for j in jobs if j.status == "running"]
    if running:
        return running[0].id
    if not jobs:
        return None
    return max(jobs, key=lambda j: (j.started_at or 0, j.created_at)).id


def picker_update(choices: list[tuple[str, int]], picked, fallback, changed: bool):
    """The job picker's update after a refresh. The user's pick is never sent back: a refresh in flight
    carries the pick it started with, and resending it would undo a pick made meanwhile. Only a job
    that is gone (or no pick) gets a new value, `fallback`; the list itself is sent when it `changed`."""
    import gradio as gr

    if picked not in [c[1] for c in choices]:
        return gr.update(choices=choices, value=fallback)
    return gr.update(choices=choices) if changed else gr.skip()


def get_job(store: JobStore, job_id) -> Job | None:
    if job_id in (None, ""):
        return None
    try:
        return store.get(int(job_id))
    except (QueueError, ValueError, TypeError):
        return None


class LastProgress:
    """run folder -> its newest step record, updated from the bytes appended since the last call."""

    def __init__(self):
        self._seen: dict[str, tuple[int, dict | None]] = {}
        self._lock = threading.Lock()

    def get(self, run_dir: str) -> dict | None:
        path = progress_path(run_dir)
        try:
            size = os.path.getsize(path)
        except OSError:
            return None
        with self._lock:
            offset, last = self._seen.get(run_dir, (0, None))
            if size < offset:  # the log was replaced (retry archives it): read it again
                offset, last = 0, None
            if size > offset:
                records, offset = read_progress(Path(run_dir), offset)
                for rec in records:
                    if is_step(rec):
                        last = {**(last or {}), **rec}  # per-step ticks carry no loss: keep the last one
            self._seen[run_dir] = (offset, last)
            return last




def queue_frame(store: JobStore, progress: LastProgress) -> pd.DataFrame:
    rows = []
    for job in store.list():
        last = progress.get(job.run_dir) if job.status != "pending" else None
        if last and last.get("total"):
            done = f"{last['step']}/{last['total']} ({100 * last['step'] // max(1, last['total'])} %)"
        else:
            done = "done" if job.status == "completed" else ""
        loss = job.final_loss if job.final_loss is not None else (last or {}).get("loss")
        rows.append([job.id, job.label, job.kind, job.status, ",".join(job.gpu_list), done, "" if loss is None else f"{loss:.4f}",
                     time.strftime("%m-%d %H:%M", time.localtime(job.created_at)), format_duration(job.duration_s, missing="")])
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def styled(frame: pd.DataFrame):
    """Colour the status cells (pandas Styler; Gradio's table shows the styles)."""
    def colour(status):
        return (f"background-color: {STATUS_COLOURS.get(status, 'transparent')}; "
                f"color: {STATUS_TEXT.get(status, 'inherit')}; font-weight: 600")

    return frame.style.map(colour, subset=["Status"])
