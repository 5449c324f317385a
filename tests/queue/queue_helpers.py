"""Helpers shared by the queue tests (a module of its own: tests must not import conftest)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

FAKE_TRAINER = Path(__file__).resolve().parent / "fake_trainer.py"


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_events(run_dir) -> list[dict]:
    path = Path(run_dir) / "progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def launches(run_dir) -> list[tuple[int, int]]:
    """(pid, resumed-from-step) per launch of the stand-in trainer."""
    path = Path(run_dir) / "launches.txt"
    return [tuple(map(int, line.split())) for line in path.read_text().splitlines()] if path.exists() else []


def fake_worker_cmd(poll_s: float = 0.05) -> list[str]:
    return [sys.executable, str(FAKE_TRAINER), "worker", str(poll_s)]
