"""What every tab shares: the queue store, the worker thread that serves the queue, TensorBoard
processes, and the folders the browser may read files from.

The worker only launches and watches subprocesses (`python -m studio train ...`); it never trains
in this process. It keeps running whatever the browsers do; leaving the app leaves a running job
running, and the next worker (this app restarted, or `python -m studio queue run`) adopts it.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from studio.paths import studio_home
from studio.queue import JobStore, Worker
from studio.ui.tensorboard import TensorBoardManager

log = logging.getLogger("studio.ui")


def data_roots_from_env() -> list[Path]:
    """`STUDIO_DATA_ROOTS`: extra folders (os.pathsep-separated) whose files the browser may show."""
    raw = os.environ.get("STUDIO_DATA_ROOTS", "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


@dataclass
class StudioContext:
    store: JobStore
    data_roots: list[Path] = field(default_factory=list)
    worker_poll_s: float = 1.0
    tensorboard: TensorBoardManager = field(default_factory=TensorBoardManager)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _worker: Worker | None = None

    @classmethod
    def create(cls, data_roots: list[Path] | None = None) -> "StudioContext":
        return cls(store=JobStore(), data_roots=list(data_roots or []) + data_roots_from_env())

    @property
    def home(self) -> Path:
        return studio_home()

    # -- worker ------------------------------------------------------------------------------
    def start_worker(self) -> None:
        """Serve the queue from a background thread (it waits if another worker holds the queue)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._worker = Worker(self.store, poll_s=self.worker_poll_s)
        self._thread = threading.Thread(target=self._serve, name="studio-queue-worker", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._worker.run_forever(self._stop)
        except Exception:  # noqa: BLE001 - a worker bug must not take the UI down; it is logged
            log.exception("the queue worker stopped with an error; restart the app to serve the queue")

    def worker_state(self) -> str:
        """One line for the UI: who serves the queue."""
        if self._thread is not None and self._thread.is_alive():
            holder = self._worker.lock.holder()  # the pid written by whoever holds the worker lock
            if holder == str(os.getpid()):
                return "the queue is served by this app"
            return f"the queue is served by another process (pid {holder}); this app takes over when it exits"
        return "no queue worker in this app: run `python -m studio queue run` to start the jobs"

    def close(self) -> None:
        """Leave the worker (running jobs go on) and stop the TensorBoards started here."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.tensorboard.stop_all()

    # -- files the browser may read --------------------------------------------------------------
    def allowed_roots(self) -> list[Path]:
        return [self.home, *self.data_roots]

    def blocked_paths(self) -> list[Path]:
        """Never served, even inside an allowed root: the queue database and credentials."""
        home = self.home
        db = self.store.path
        out = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.worker.lock"), home / ".env",
               home / "secrets"]
        user = Path.home()
        out += [user / ".ssh", user / ".netrc", user / ".huggingface", user / ".cache" / "huggingface" / "token",
                user / ".cache" / "huggingface" / "stored_tokens", user / ".aws", user / ".config" / "gcloud"]
        for var in ("HF_TOKEN_PATH",):
            if os.environ.get(var):
                out.append(Path(os.environ[var]))
        if os.environ.get("HF_HOME"):
            out += [Path(os.environ["HF_HOME"]) / "token", Path(os.environ["HF_HOME"]) / "stored_tokens"]
        return out

    def can_serve(self, path: str | Path) -> bool:
        """True when Gradio may hand this file to the browser (else the tab reads it into memory)."""
        resolved = Path(path).resolve()
        roots = self.allowed_roots() + [Path.cwd(), Path(tempfile.gettempdir())]
        blocked = [b.resolve() for b in self.blocked_paths()]  # real paths on both sides of every comparison
        if any(resolved == b or b in resolved.parents for b in blocked):
            return False
        return any(resolved == r or r in resolved.parents for r in (r.resolve() for r in roots))
