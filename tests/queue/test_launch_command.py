"""How the queue starts a job, and `job.run_name` shown beside the job's name in the queue."""
from __future__ import annotations

import sys
from pathlib import Path

from studio.queue.commands import job_command

CONFIG = Path("/runs/a/config.json")


def test_every_job_starts_as_a_studio_command_which_launches_its_own_processes():
    # several processes: `studio train` writes the accelerate config and runs accelerate's launcher
    # (tests/distributed), so the queue, the script and the CLI start jobs the same way
    assert job_command("train", CONFIG) == [sys.executable, "-m", "studio", "train", str(CONFIG)]
    assert job_command("preprocess", CONFIG, python="py") == ["py", "-m", "studio", "preprocess", str(CONFIG)]


def test_run_name_is_shown_in_the_queue_list(studio_home):
    from studio.queue import JobStore
    from studio.queue.cli import _list_rows

    store = JobStore()
    job = store.add({"model": {"family": "sd15", "path": "tiny:sd15"}, "job": {"name": "a", "run_name": "v2 ink"}})
    plain = store.add({"model": {"family": "sd15", "path": "tiny:sd15"}, "job": {"name": "b"}})
    assert store.get(job.id).label == "a (v2 ink)" and store.get(plain.id).label == "b"
    assert "a (v2 ink)" in _list_rows(store.list())
