"""The Monitor tab's per-browser view of one run: what has been read of `progress.jsonl` and
`console.log` so far. Each timer tick reads only the bytes appended since the previous tick, so a
long run costs the same per tick as a short one; a new page starts from the beginning (re-attach).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from studio.runfolder import FINAL_EVENTS, Event, console_path, is_step, progress_path, read_progress

# What a run does after its last step, from the event it wrote last (shown instead of "ETA 0:00:00").
PHASES = {"sample": "rendering the final samples", "saved": "exports written and verified, finishing",
          "warning": "finishing (see the warning in Events)", "checkpoint": "saving"}
CONSOLE_LINES = 300  # lines kept for the console tail
CONSOLE_FIRST_READ = 64 * 1024  # a fresh page shows the end of a long console.log, not all of it
MAX_POINTS = 2000  # points per plot series; longer runs are thinned evenly


@dataclass
class RunFeed:
    job_id: int | None = None
    run_dir: str = ""
    progress_offset: int = 0
    console_offset: int = -1  # -1: not read yet
    steps: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, lr) at logging steps
    step_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, that step's own loss), every step
    lrs: list[tuple[int, float]] = field(default_factory=list)  # (step, learning rate), every step
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, eval loss)
    events: list[str] = field(default_factory=list)
    last: dict | None = None  # newest step record
    final: dict | None = None  # the done / stopped / error event
    phase: str = ""  # what the newest non-step event says the run is doing (saving, exporting, ...)
    console: list[str] = field(default_factory=list)
    choices_signature: str = ""
    plotted: tuple = ()  # the chart data last sent (counts of points), see `charts_due`
    settling: bool = False  # the charts changed on the last tick: send them once more

    def reset(self, job_id: int | None, run_dir: str) -> "RunFeed":
        return RunFeed(job_id=job_id, run_dir=run_dir, choices_signature=self.choices_signature)


def _describe(rec: dict) -> str:
    name = rec["event"]
    step = f"step {rec['step']}: " if "step" in rec else ""
    if name == Event.CHECKPOINT:
        return f"{step}checkpoint {Path(rec.get('path', '')).name}"
    if name == Event.SAMPLE:
        return f"{step}sample “{rec.get('prompt', '')}”"
    if name == Event.SAVED:
        verdict = {True: ", checked", False: ", does not match the trained model"}.get(rec.get("verified"), "")
        return f"{step}saved {rec.get('format', '')} {Path(rec.get('path', '')).name}{verdict}"
    if name == Event.EVAL:
        return f"{step}eval loss {rec.get('loss', rec.get('eval_loss', '?'))}"
    if name in (Event.WARNING, Event.ERROR):
        return f"**{name}** {step}{rec.get('message', '')}"
    if name == Event.DONE:
        return f"**done** {step}".rstrip(": ")
    return f"{step}{rec.get('message') or name}"


def read_new_progress(feed: RunFeed) -> bool:
    """Append what the trainer wrote since the last call; True when something new arrived."""
    path = progress_path(feed.run_dir)
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    if size < feed.progress_offset:  # replaced (a retry archives the old log): start over
        feed.progress_offset, feed.steps, feed.step_losses, feed.lrs, feed.evals, feed.events = 0, [], [], [], [], []
        feed.last = feed.final = None
    if size == feed.progress_offset:
        return False
    records, feed.progress_offset = read_progress(Path(feed.run_dir), feed.progress_offset)
    for rec in records:
        if is_step(rec):
            feed.last = {**(feed.last or {}), **rec}  # a per-step tick has no loss: keep the last one
            feed.phase = ""
            if rec.get("lr") is not None:
                feed.lrs.append((int(rec["step"]), float(rec["lr"])))
            if rec.get("loss") is not None:
                step = int(rec["step"])
                feed.steps.append((step, float(rec["loss"]), float(rec.get("lr") or 0.0)))
                each = rec.get("step_losses") or []  # the steps since the last logging step, in order
                feed.step_losses += [(step - len(each) + 1 + i, float(v)) for i, v in enumerate(each)]
            continue
        name = rec.get("event")
        if name == Event.EVAL and isinstance(rec.get("loss", rec.get("eval_loss")), (int, float)):
            feed.evals.append((int(rec.get("step", 0)), float(rec.get("loss", rec.get("eval_loss")))))
        if name in FINAL_EVENTS:
            feed.final = rec
        elif name == Event.START:
            feed.final = None
        if name:
            feed.events = (feed.events + [_describe(rec)])[-30:]
            feed.phase = PHASES.get(name, feed.phase)
    return bool(records)


def read_new_console(feed: RunFeed) -> bool:
    path = console_path(feed.run_dir)
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    if feed.console_offset < 0 or size < feed.console_offset:
        feed.console_offset, feed.console = max(0, size - CONSOLE_FIRST_READ), []
        skip_partial = feed.console_offset > 0
    else:
        skip_partial = False
    if size == feed.console_offset:
        return False
    with open(path, "rb") as fh:
        fh.seek(feed.console_offset)
        chunk = fh.read(size - feed.console_offset)
    end = chunk.rfind(b"\n") + 1
    if end == 0:
        return False  # wait for a whole line
    feed.console_offset += end
    lines = chunk[:end - 1].decode("utf-8", errors="replace").split("\n")  # not splitlines: it splits on \r
    if skip_partial and lines:
        lines = lines[1:]
    # tqdm redraws with carriage returns: keep the last state of such a line
    feed.console = (feed.console + [line.rstrip("\r").rsplit("\r", 1)[-1] for line in lines])[-CONSOLE_LINES:]
    return True


# The studio's own console lines (its logging format, the queue's launch header) and every error; the rest
# is library chatter (loader notices, dtype hints, progress bars), hidden unless asked for.
STUDIO_LINE = re.compile(r"^(\d{4}-\d\d-\d\d [\d:,]+ ([A-Z]+ studio[\w.]*|ERROR \S+|CRITICAL \S+):|=== queue:|"
                         r"Traceback|\s+File |\w*(Error|Exception)\b)")


def console_text(feed: RunFeed, everything: bool) -> str:
    if everything:
        return "\n".join(feed.console)
    own = [line for line in feed.console if STUDIO_LINE.match(line)]
    hidden = len(feed.console) - len(own)
    note = [f"({hidden} library line(s) hidden: tick “Show library messages” to see them)"] if hidden else []
    return "\n".join(own + note)


def _thin(rows: list) -> list:
    if len(rows) <= MAX_POINTS:
        return rows
    stride = len(rows) / MAX_POINTS
    return [rows[int(i * stride)] for i in range(MAX_POINTS)] + [rows[-1]]


# Each step's own loss light (it is noisy: diffusion losses swing with the sampled timestep), the
# logging window's mean strong, the eval loss apart.
LOSS_COLORS = {"train, each step": "#c7d2fe", "train": "#4338ca", "eval": "#ea580c"}


def loss_frame(feed: RunFeed) -> pd.DataFrame:
    """Each step's own loss (a thin, noisy line), the mean over each logging window, and the eval loss."""
    each = feed.step_losses if len(feed.step_losses) > len(feed.steps) else []  # logging every step: one line
    rows = [(s, loss, "train, each step") for s, loss in _thin(each)]
    rows += [(s, loss, "train") for s, loss, _ in _thin(feed.steps)]
    rows += [(s, loss, "eval") for s, loss in _thin(feed.evals)]
    return pd.DataFrame(rows, columns=["step", "loss", "series"])


def lr_frame(feed: RunFeed) -> pd.DataFrame:
    """The learning rate of every step up to the newest loss point: both charts share their x range, so
    they are redrawn together at logging steps (a new x range rebuilds a chart in the browser)."""
    last = feed.steps[-1][0] if feed.steps else 0
    return pd.DataFrame(_thin([(s, lr) for s, lr in feed.lrs if s <= last]), columns=["step", "learning rate"])


def charts_due(feed: RunFeed, fresh: bool) -> bool:
    """Whether this tick sends the charts: when their points changed, and once more on the next tick.
    Gradio's chart rebuilds itself when its x range changes and drops data sent while it rebuilds
    (gradio 6.31, NativePlot), so the last change is sent again once the rebuild is done."""
    shape = (len(feed.steps), len(feed.step_losses), len(feed.evals))  # the plotted rates follow feed.steps
    changed = fresh or shape != feed.plotted
    due = changed or feed.settling
    feed.plotted, feed.settling = shape, changed
    return due


def clock(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_html(feed: RunFeed, status: str) -> str:
    last = feed.last or {}
    step, total = int(last.get("step", 0)), int(last.get("total", 0) or 0)
    share = 100.0 if status == "completed" else (100.0 * step / total if total else 0.0)
    eta = "–" if status != "running" else clock(last.get("eta_s"))
    loss = f"{last['loss']:.4f}" if isinstance(last.get("loss"), (int, float)) else "–"
    lr = f"{last['lr']:.2e}" if isinstance(last.get("lr"), (int, float)) else "–"
    if not last and status in ("pending", "running"):
        words = "waiting for the first step… (loading the model and data)"
    elif not last:
        words = "no training steps recorded"
    elif status == "running" and total and step >= total:  # the steps are done; the run is not yet
        words = (f"step <b>{step}</b> / {total} · loss {loss} · elapsed {clock(last.get('elapsed_s'))} · "
                 f"training done: {feed.phase or 'saving the adapter, exporting and verifying the exports'}…")
    else:
        words = (f"step <b>{step}</b> / {total or '?'} · epoch {last.get('epoch', '–')} · loss {loss} · "
                 f"lr {lr} · elapsed {clock(last.get('elapsed_s'))} · ETA {eta}")
    final = feed.final or {}
    note = f"<div class='studio-final'>{final.get('message', '')}</div>" if final.get("message") else ""
    return (f"<div class='studio-status studio-status-{status}' id='monitor-progress-text'>"
            f"<span class='studio-badge'>{status}</span> {words}</div>"
            f"<div class='studio-progress'><div style='width:{share:.1f}%'></div></div>{note}")
