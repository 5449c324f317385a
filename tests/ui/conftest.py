"""UI test fixtures: a temporary STUDIO_HOME, and the studio app started as a real process."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the studio in Debian's chromium with Playwright")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "studio_home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    return home


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@pytest.fixture(scope="module")
def studio_server(tmp_path_factory):
    """`python app.py --port N` with its own STUDIO_HOME; yields (url, home, log). Ended with SIGTERM,
    which must be a clean exit (exit code 0)."""
    home = tmp_path_factory.mktemp("ui") / "studio_home"
    port = free_port()
    env = {**os.environ, "STUDIO_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    env.pop("STUDIO_AUTH", None)
    log_path = home.parent / "app.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, 240)
        yield url, home, log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        log.close()
        end_running_jobs(home)
    assert code == 0, f"the studio did not exit cleanly on SIGTERM (exit {code}); see {log_path}"


def end_running_jobs(home: Path) -> None:
    """Jobs outlive the app by design; a test that stopped early must not leave one training."""
    from studio.queue import JobStore

    if not (home / "queue.db").exists():
        return
    for job in JobStore(home / "queue.db").list(("running",)):
        if job.pid:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
