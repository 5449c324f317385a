"""Queue test fixtures: a store on a private STUDIO_HOME, and jobs run by the stand-in trainer."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(studio_home) -> Path:
    """The root conftest's private STUDIO_HOME, resolved as the studio resolves it."""
    return studio_home.resolve()


@pytest.fixture
def store(home):
    from studio.queue import JobStore

    store = JobStore()
    store.set_setting("queue.stop_grace_s", 5.0)
    store.set_setting("queue.kill_grace_s", 1.0)
    return store


@pytest.fixture
def add_fake(store, tmp_path):
    """Queue a job for the stand-in trainer; `opts` goes into job.run_name (see fake_trainer.py)."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)

    def add(name: str = "", opts: str = "", **job):
        config = {"job": {"name": name, "run_name": opts, **job}, "model": {"path": "tiny:sd15"},
                  "data": {"path": str(data)}}
        return store.add(config)

    return add


@pytest.fixture
def worker(store):
    from fake_trainer import command
    from studio.queue import Worker

    return Worker(store, poll_s=0.05, command=command)
