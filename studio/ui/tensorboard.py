"""TensorBoard for a job's event files: a subprocess on a free local port, ended with the app.

One TensorBoard per log folder; launching it again for the same folder returns the running one.
It binds 127.0.0.1 only: the studio never opens a second, unauthenticated port to the network.
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

EVENT_PREFIX = "events.out.tfevents"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def event_files(log_dir: Path) -> list[Path]:
    return sorted(p for p in Path(log_dir).rglob(f"{EVENT_PREFIX}*") if p.is_file()) if Path(log_dir).is_dir() else []


def delete_event_files(log_dir: Path) -> int:
    files = event_files(log_dir)
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)


@dataclass
class TensorBoardProcess:
    log_dir: Path
    port: int
    popen: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def alive(self) -> bool:
        return self.popen.poll() is None


class TensorBoardManager:
    def __init__(self):
        self._procs: dict[str, TensorBoardProcess] = {}
        self._lock = threading.Lock()
        atexit.register(self.stop_all)

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("tensorboard") is not None

    def launch(self, log_dir: Path, console: Path | None = None) -> TensorBoardProcess:
        """Start (or return the running) TensorBoard for `log_dir`. Raises RuntimeError with the reason."""
        if not self.available():
            raise RuntimeError("TensorBoard is not installed: pip install tensorboard")
        log_dir = Path(log_dir).resolve()
        with self._lock:
            running = self._procs.get(str(log_dir))
            if running is not None and running.alive():
                return running
            log_dir.mkdir(parents=True, exist_ok=True)
            port = free_port()
            argv = [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir), "--host", "127.0.0.1",
                    "--port", str(port), "--reload_interval", "5"]
            out = open(console, "ab") if console else subprocess.DEVNULL
            try:
                popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            finally:
                if console:
                    out.close()
            proc = TensorBoardProcess(log_dir, port, popen)
            self._procs[str(log_dir)] = proc
            return proc

    def running(self, log_dir: Path) -> TensorBoardProcess | None:
        proc = self._procs.get(str(Path(log_dir).resolve()))
        return proc if proc is not None and proc.alive() else None

    def stop(self, log_dir: Path) -> bool:
        with self._lock:
            proc = self._procs.pop(str(Path(log_dir).resolve()), None)
        if proc is None:
            return False
        _end(proc.popen)
        return True

    def stop_all(self) -> None:
        with self._lock:
            procs, self._procs = list(self._procs.values()), {}
        for proc in procs:
            _end(proc.popen)


def _end(popen: subprocess.Popen) -> None:
    if popen.poll() is not None:
        return
    try:
        os.killpg(popen.pid, signal.SIGTERM)  # its own session: TensorBoard and any helper it started
        popen.wait(timeout=5)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=5)
