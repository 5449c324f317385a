"""The queue database's health: an integrity check at every open and a recent verified backup.

A damaged `queue.db` is never replaced or re-created silently: opening it raises `QueueCorrupt`,
which names the file, the problem and the backup, and `python -m studio queue restore` moves the
damaged file aside (kept, for inspection) and puts the backup in its place. The backup is taken with
SQLite's online backup API (consistent even while another process writes), checked with
`PRAGMA quick_check`, and only then renamed over the previous one, so a bad copy never replaces a
good backup.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

BACKUP_SUFFIX = ".bak"


def backup_path(db: Path) -> Path:
    return db.with_name(db.name + BACKUP_SUFFIX)


def _check(conn: sqlite3.Connection) -> str | None:
    rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    return None if rows == ["ok"] else "; ".join(rows[:3])


def _jobs_in(db: Path) -> int | None:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def damage(db: Path) -> str | None:
    """Why `db` cannot be trusted, or None. A missing file is fine (created on first use); an empty
    one is damage when a backup exists, since the queue had a database before."""
    if not db.exists():
        return None
    if db.stat().st_size == 0:
        return "the file is empty (0 bytes)" if backup_path(db).exists() else None
    try:
        conn = sqlite3.connect(db, timeout=30.0)  # read-write: a read-only open of a WAL file can fail
        try:
            return _check(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        return str(err)


def corrupt_message(db: Path, problem: str) -> str:
    bak = backup_path(db)
    if bak.exists():
        n = _jobs_in(bak)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(bak.stat().st_mtime))
        fix = (f"a backup from {when} ({n if n is not None else '?'} job(s)) is {bak}; stop the studio and every "
               "`queue run`, then run `python -m studio queue restore` (the damaged file is kept beside it)")
    else:
        fix = (f"no backup exists; move {db.name} aside to start an empty queue (run folders are not "
               "affected)")
    return f"the queue database {db} is damaged ({problem}); it was left untouched. {fix}"


def _changed_ns(db: Path) -> int:
    """When the database last changed: in WAL mode writes land in `-wal` first."""
    return max((p.stat().st_mtime_ns for p in (db, Path(f"{db}-wal")) if p.exists()), default=0)


def take_backup(db: Path, force: bool = False) -> Path | None:
    """Copy `db` to `queue.db.bak` (online backup, verified, then renamed). Skipped while the backup
    is newer than the database's last change, unless forced."""
    bak = backup_path(db)
    if not force and bak.exists() and bak.stat().st_mtime_ns > _changed_ns(db):
        return None
    tmp = bak.with_name(f"{bak.name}.{os.getpid()}.tmp")  # two processes may back up at once
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(db, timeout=30.0)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            problem = _check(dst)
        finally:
            dst.close()
    finally:
        src.close()
    if problem is not None:
        tmp.unlink(missing_ok=True)
        return None
    os.replace(tmp, bak)
    return bak


def restore(db: Path) -> tuple[Path, Path | None]:
    """Put the backup in place of a damaged database; returns (restored db, where the damaged one went)."""
    bak = backup_path(db)
    if not bak.exists():
        raise FileNotFoundError(f"no backup of the queue database at {bak}")
    problem = damage(bak)
    if problem:
        raise ValueError(f"the backup {bak} is damaged too ({problem}); nothing was changed")
    kept = None
    if db.exists():
        kept = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(db, kept)
    for side in (Path(f"{db}-wal"), Path(f"{db}-shm")):  # they belong to the damaged file
        if side.exists():
            os.replace(side, side.with_name(f"{side.name}.damaged"))
    shutil.copy2(bak, db)
    return db, kept
