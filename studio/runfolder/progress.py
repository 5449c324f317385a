"""`progress.jsonl`: a job's only channel to the queue and the UI (one JSON object per line).

`ProgressLog` writes it; `read_progress` is the one reader (UI, queue, bench, tests): it parses whole
lines only, so a line being written (or cut short by a kill) is never trusted. Event names: `Event`.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from studio.runfolder.events import FINAL_EVENTS, Event, is_step
from studio.runfolder.layout import progress_path


class ProgressLog:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int = 0, write: bool = True):
        self.path = progress_path(run_dir)
        self.total = total_steps
        self.start_step = start_step
        self.t0 = time.time()
        # write=False: a rank other than the main process, which keeps the clock but writes nothing.
        self._fh = open(self.path, "a", encoding="utf-8") if write else None
        self._lock = threading.Lock()  # background work (hub uploads) reports too: one whole line at a time

    def _write(self, record: dict) -> None:
        if self._fh is None:
            return
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def elapsed(self) -> float:
        return time.time() - self.t0

    def eta(self, step: int) -> float | None:
        done = step - self.start_step
        if done <= 0:
            return None
        return round(self.elapsed() / done * (self.total - step), 1)

    def step(self, step: int, epoch: int, loss: float, lr: float, **extra) -> None:
        self._write({"step": step, "total": self.total, "epoch": epoch, "loss": round(loss, 6), "lr": lr,
                     "elapsed_s": round(self.elapsed(), 2), "eta_s": self.eta(step), **extra,
                     "time": time.time()})

    def tick(self, step: int, epoch: int, lr: float | None = None) -> None:
        """A step between `logging_steps` records: where the run is and its learning rate (the scheduler's,
        on the host), without the loss (reading it every step would make a GPU wait for each step; the
        next logging step's record carries it)."""
        self._write({"step": step, "total": self.total, "epoch": epoch, "elapsed_s": round(self.elapsed(), 2),
                     "eta_s": self.eta(step), **({"lr": lr} if lr is not None else {}), "time": time.time()})

    def event(self, name: Event | str, **fields) -> None:
        self._write({"event": str(Event(name)), "time": time.time(), **fields})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def run_reported(progress: ProgressLog, what: str, work) -> int:
    """Run `work()` (returns the fields of the `done` event) so that every ending is a progress event:
    done (exit 0), stopped by Ctrl-C (130) or error (1). Used by preprocess and estimate jobs."""
    import logging

    try:
        progress.event(Event.DONE, **work())
        return 0
    except KeyboardInterrupt:
        progress.event(Event.STOPPED, message="interrupted from the keyboard")
        return 130
    except Exception as err:  # noqa: BLE001 - every failure ends with an error event
        logging.getLogger("studio").error("%s failed: %s", what, err,
                                          exc_info=not isinstance(err, (ValueError, OSError)))
        progress.event(Event.ERROR, message=str(err) or type(err).__name__, type=type(err).__name__)
        return 1
    finally:
        progress.close()


def _records(chunk: bytes) -> Iterator[tuple[int, dict]]:
    """(offset of the line in `chunk`, record) for each whole line that holds a JSON object."""
    pos = 0
    for raw in chunk.splitlines(keepends=True):
        start, pos = pos, pos + len(raw)
        try:  # a line cut short by a kill is not valid JSON, so it is skipped
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict):
            yield start, rec


def read_progress(run_dir: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Records appended since byte `offset`, and the new offset (only whole lines are consumed)."""
    path = progress_path(run_dir)
    if not path.exists():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    end = chunk.rfind(b"\n") + 1
    return [rec for _, rec in _records(chunk[:end])], offset + end


def progress_size(run_dir: Path) -> int:
    try:
        return progress_path(run_dir).stat().st_size
    except FileNotFoundError:
        return 0


@dataclass(frozen=True)
class Outcome:
    """What the progress log says about one launch."""

    last_event: str | None  # this launch's last final event (done/stopped/error), else its last event
    message: str  # the error event's message, when there is one
    final_loss: float | None  # loss of the newest step record in the whole log


def read_outcome(run_dir: Path, offset: int = 0) -> Outcome:
    """Read `progress.jsonl`; only records after byte `offset` (this launch's) decide the event.

    A truncated last line (the trainer killed mid-write) is skipped rather than trusted. A final event
    wins over what background work (a checkpoint upload) may report after it.
    """
    try:
        data = progress_path(run_dir).read_bytes()
    except FileNotFoundError:
        return Outcome(None, "", None)
    last_event, message, final_loss = None, "", None
    for start, rec in _records(data):
        if is_step(rec) and isinstance(rec.get("loss"), (int, float)):
            final_loss = float(rec["loss"])
        if start >= offset and (last_event not in FINAL_EVENTS or rec.get("event") in FINAL_EVENTS):
            last_event = rec.get("event")
            message = str(rec.get("message", "")) if last_event == Event.ERROR else ""
    return Outcome(last_event, message, final_loss)
