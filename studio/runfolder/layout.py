"""What the queue reads and writes in a run folder (DESIGN.md §3.3).

The run folder is the only channel between the queue and a trainer: the worker writes
`config.json` and `control/STOP`, the trainer writes `progress.jsonl` and `console.log`.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.json"
PROGRESS_FILE = "progress.jsonl"
CONSOLE_FILE = "console.log"
STOP_FILE = Path("control") / "STOP"
ATTEMPTS_DIR = "attempts"


@dataclass(frozen=True)
class Outcome:
    """What the progress log says about one launch."""

    last_event: str | None  # the `event` of the last record written by this launch, if any
    message: str  # the error event's message, when there is one
    final_loss: float | None  # loss of the newest step record in the whole log


def read_outcome(run_dir: Path, offset: int = 0) -> Outcome:
    """Read `progress.jsonl`; only records after byte `offset` (this launch's) decide the event.

    A truncated last line (the trainer killed mid-write) is skipped rather than trusted.
    """
    path = Path(run_dir) / PROGRESS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Outcome(None, "", None)
    last_event, message, final_loss = None, "", None
    pos = 0
    for raw in data.splitlines(keepends=True):
        start, pos = pos, pos + len(raw)
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if "event" not in rec and isinstance(rec.get("loss"), (int, float)):
            final_loss = float(rec["loss"])
        if start >= offset:
            last_event = rec.get("event")
            message = str(rec.get("message", "")) if last_event == "error" else ""
    return Outcome(last_event, message, final_loss)


def progress_size(run_dir: Path) -> int:
    try:
        return (Path(run_dir) / PROGRESS_FILE).stat().st_size
    except FileNotFoundError:
        return 0


def write_config(run_dir: Path, config: dict) -> Path:
    """Write the job's resolved config atomically (a reader never sees half a file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def request_stop(run_dir: Path) -> None:
    path = Path(run_dir) / STOP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def clear_stop(run_dir: Path) -> None:
    # A STOP left by an earlier launch would stop a resumed job at its first step.
    (Path(run_dir) / STOP_FILE).unlink(missing_ok=True)


def archive_attempt(run_dir: Path, attempt: int) -> Path | None:
    """Move the previous attempt's checkpoints and progress log to `attempts/<n>/`.

    A retry starts fresh: a checkpoint left from before would otherwise be picked by
    auto-resume, or outlive the new run's checkpoints in "newest complete checkpoint" order.
    """
    run_dir = Path(run_dir)
    movable = sorted(run_dir.glob("checkpoint-*")) + [p for p in [run_dir / PROGRESS_FILE] if p.exists()]
    if not movable:
        return None
    dest = run_dir / ATTEMPTS_DIR / str(attempt)
    n = 1
    while dest.exists():  # a retry of a retry of the same attempt number never overwrites
        n += 1
        dest = run_dir / ATTEMPTS_DIR / f"{attempt}_{n}"
    dest.mkdir(parents=True)
    for path in movable:
        shutil.move(str(path), str(dest / path.name))
    return dest


def console_tail(run_dir: Path, lines: int = 5, max_bytes: int = 16384) -> str:
    """The last lines the job printed: the best error message a crash leaves."""
    path = Path(run_dir) / CONSOLE_FILE
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(line for line in text.splitlines()[-lines:])
