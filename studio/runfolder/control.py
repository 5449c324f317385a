"""`control/`: files the UI or the queue drops to ask a running trainer something (STOP, SAVE, SAMPLE)."""
from __future__ import annotations

from pathlib import Path

from studio.runfolder.layout import CONTROL_DIR, STOP_FILE

REQUESTS = ("STOP", "SAVE", "SAMPLE")


def control_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CONTROL_DIR


def request(run_dir: Path, what: str) -> None:
    if what not in REQUESTS:
        raise ValueError(f"unknown control request {what!r}; one of {REQUESTS}")
    folder = control_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / what).touch()


def request_stop(run_dir: Path) -> None:
    request(run_dir, "STOP")


def clear_stop(run_dir: Path) -> None:
    # A STOP left by an earlier launch would stop a resumed job at its first step.
    (Path(run_dir) / STOP_FILE).unlink(missing_ok=True)


class ControlFiles:
    """Polled once per optimizer step: an existence check per file, cheap next to a training step."""

    def __init__(self, run_dir: Path):
        self.folder = control_dir(run_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Requests older than this process were meant for an earlier launch (e.g. the STOP that ended
        # the run being resumed now); newer ones (sent while we start up) are kept.
        import psutil

        started = psutil.Process().create_time()
        for name in REQUESTS:
            path = self.folder / name
            if path.exists() and path.stat().st_mtime < started:
                path.unlink(missing_ok=True)

    def take(self, what: str) -> bool:
        """True once per request: SAVE and SAMPLE are consumed; STOP stays (the run ends anyway)."""
        path = self.folder / what
        if not path.exists():
            return False
        if what != "STOP":
            path.unlink(missing_ok=True)
        return True
