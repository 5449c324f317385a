"""Issue #18 item 4: a damaged queue database is detected at start, never replaced silently, and
restored from the verified backup with `queue restore`."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from reliability_helpers import run_cli
from studio.queue import backup
from tests.conftest import REPO


@pytest.fixture
def queued(ws, capsys):
    """A queue with three jobs (and so a backup of them)."""
    for name in ("one", "two", "three"):
        assert run_cli(capsys, "queue", "add", ws.config, "--name", name,
                       "--set", f"job.output_dir={ws.root / name}").rc == 0
    db = ws.home / "queue.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the rows now live in queue.db itself
    conn.close()
    assert backup.backup_path(db).is_file()
    return db


def _damage(db, how: str) -> None:
    if how == "truncated":
        db.write_bytes(b"")
    elif how == "half":
        with open(db, "r+b") as fh:
            fh.truncate(db.stat().st_size // 2)
    else:  # overwritten with something else
        db.write_bytes(b"PK\x03\x04 a zip file, not a database" * 200)


@pytest.mark.parametrize("how", ["truncated", "half", "garbage"])
def test_a_damaged_database_is_named_and_kept_then_restored(queued, ws, capsys, how):
    db = queued
    _damage(db, how)
    damaged = db.read_bytes()
    for argv in (["queue", "list"], ["queue", "run", "--until-empty"], ["queue", "add", ws.config]):
        result = run_cli(capsys, *argv)
        assert result.rc == 1, (argv, result.text)
        assert f"the queue database {db} is damaged" in result.err
        assert "3 job(s)" in result.err and "python -m studio queue restore" in result.err
        assert "Traceback" not in result.text and "the queue is empty" not in result.text
        assert db.read_bytes() == damaged  # never replaced, re-created or extended

    restored = run_cli(capsys, "queue", "restore")
    assert restored.rc == 0, restored.text
    kept = [p for p in db.parent.iterdir() if p.name.startswith("queue.db.damaged-")]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    listing = run_cli(capsys, "queue", "list")
    assert listing.rc == 0 and all(name in listing.out for name in ("one", "two", "three"))


def test_the_app_refuses_a_damaged_database_without_a_traceback(queued, ws):
    _damage(queued, "half")
    env = {**os.environ, "STUDIO_HOME": str(ws.home), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.run([sys.executable, "app.py", "--port", "0"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 1
    assert "is damaged" in proc.stderr and "queue restore" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_restore_without_a_backup_says_so(ws, capsys):
    (ws.home / "queue.db").write_bytes(b"not a database at all" * 100)
    listing = run_cli(capsys, "queue", "list")
    assert listing.rc == 1 and "no backup exists" in listing.err
    restored = run_cli(capsys, "queue", "restore")
    assert restored.rc == 1 and "no backup" in restored.err


def test_a_backup_follows_every_change(ws, capsys):
    assert run_cli(capsys, "queue", "add", ws.config, "--name", "first").rc == 0
    db = ws.home / "queue.db"
    assert backup._jobs_in(backup.backup_path(db)) == 1
    assert run_cli(capsys, "queue", "add", ws.config, "--name", "second",
                   "--set", f"job.output_dir={ws.root / 'second'}").rc == 0
    assert backup._jobs_in(backup.backup_path(db)) == 2
