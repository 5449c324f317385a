"""The queue's database: one SQLite file under STUDIO_HOME, written only by this package.

Public API (the UI and the CLI use exactly this):

    store = JobStore()                       # STUDIO_HOME/queue.db (created on first use)
    job = store.add(config, kind="train", name="")   # config: JobConfig or its JSON dict
    store.list() / store.get(id)             # Job rows in queue order
    store.move(id, index)                    # reorder among pending jobs (0 = runs next)
    store.stop(id)                           # pending -> stopped; running -> STOP, then signals
    store.resume(id)                         # continue from the job's own newest checkpoint
    store.retry(id)                          # run again from the start (old checkpoints archived)
    store.clone(id, name="")                 # a new pending job with the same config
    store.remove(id)                         # refused while running (QueueError)
    store.update(id, config)                 # replace a job's config while it is not running
    store.get_setting(key) / store.set_setting(key, value)

Statuses: pending -> running -> completed | stopped | failed | interrupted.
Every change is one `BEGIN IMMEDIATE` transaction, so two processes (UI, CLI, worker) never
interleave half-done changes, and two workers can never claim the same job.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from studio.config import ConfigError, JobConfig, finalize_job, load_config
from studio.config.loader import default_job_name, hub_folder_name
from studio.paths import studio_home
from studio import runfolder
from studio.queue import backup
from studio.queue.job import FINISHED, KINDS, STATUSES, Job, QueueCorrupt, QueueError  # noqa: F401 (re-exported)

log = logging.getLogger("studio.queue")

SETTINGS_DEFAULTS: dict[str, Any] = {
    # Re-queue jobs found `interrupted` at worker start so that they continue from their checkpoint.
    "queue.auto_resume_interrupted": True,
    # Seconds a trainer gets to save and exit after STOP before SIGTERM; then SIGKILL after kill_grace_s.
    "queue.stop_grace_s": 180.0,
    "queue.kill_grace_s": 15.0,
    # FIELDS.md Q03: prefix the generated script's commands with `uv run`. Off by default: the
    # worker itself runs the studio's own interpreter, and the script must be what the worker runs.
    "queue.use_uv": False,
    # The GPUs the worker schedules jobs on: "" = no pool, one job at a time (as before); "auto" = the
    # CUDA devices of this machine; "0,1,2,3" = these. With a pool, jobs run side by side on disjoint
    # GPUs (studio/queue/gpus.py); `queue run --gpus` overrides this for one worker.
    "queue.gpus": "",
    # With a pool: how many jobs that use no GPU (model.device=cpu, or any job when the pool is empty)
    # run at the same time.
    "queue.cpu_jobs": 1,
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    position INTEGER NOT NULL,
    config TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    cwd TEXT NOT NULL,
    launch TEXT NOT NULL DEFAULT 'fresh',
    pid INTEGER,
    proc_start REAL,
    nonce TEXT,
    progress_offset INTEGER NOT NULL DEFAULT 0,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    exit_code INTEGER,
    error TEXT,
    final_loss REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    gpus TEXT,
    earlier_s REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status_position ON jobs (status, position);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _as_dict(config: Any) -> dict:
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    if not isinstance(config, dict):
        raise QueueError(f"a job config must be a JobConfig or a dict, not {type(config).__name__}")
    return json.loads(json.dumps(config))  # a deep copy that is also proof it is JSON


class JobStore:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else studio_home() / "queue.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        problem = backup.damage(self.path)  # never open (and so re-create or extend) a damaged file
        if problem:
            raise QueueCorrupt(backup.corrupt_message(self.path, problem))
        with self._connect() as conn:
            # WAL: readers (the UI's timer) never block the worker's writes, and vice versa.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            columns = {r["name"] for r in conn.execute("PRAGMA table_info(jobs)")}
            if "earlier_s" not in columns:  # a database from before durations summed resumed runs
                conn.execute("ALTER TABLE jobs ADD COLUMN earlier_s REAL NOT NULL DEFAULT 0")
            if "gpus" not in columns:  # a queue written before the GPU pool existed
                conn.execute("ALTER TABLE jobs ADD COLUMN gpus TEXT")
        self._backup()

    def _backup(self) -> None:
        try:
            backup.take_backup(self.path)
        except (sqlite3.Error, OSError) as err:  # a backup must never fail a queue operation
            log.warning("queue backup skipped: %s", err)

    # -- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short-lived connection per operation: safe from any thread, and no lock is held
        # between operations. isolation_level=None lets `_tx` issue BEGIN IMMEDIATE itself.
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: takes the write lock up front, so read-then-write is atomic."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self._backup()  # a few ms for a queue of hundreds of jobs

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        data = dict(row)
        data["config"] = json.loads(data["config"])
        data["stop_requested"] = bool(data["stop_requested"])
        return Job(**data)

    def _get(self, conn: sqlite3.Connection, job_id: int) -> Job:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if row is None:
            raise QueueError(f"no job with id {job_id} (see `python -m studio queue list`)")
        return self._job(row)

    @staticmethod
    def _next_position(conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM jobs").fetchone()[0]

    # -- reading ----------------------------------------------------------------------------
    def get(self, job_id: int) -> Job:
        with self._connect() as conn:
            return self._get(conn, job_id)

    def list(self, statuses: tuple[str, ...] | None = None) -> list[Job]:
        """Jobs in queue order (pending ones run in this order), optionally only these statuses."""
        where, args = "", ()
        if statuses is not None:  # filtered in SQL: the idle worker asks for `running` every poll
            where, args = f"WHERE status IN ({','.join('?' * len(statuses))})", tuple(statuses)
        with self._connect() as conn:
            rows = conn.execute(f"SELECT * FROM jobs {where} ORDER BY position, id", args).fetchall()
        return [self._job(r) for r in rows]

    def get_setting(self, key: str) -> Any:
        if key not in SETTINGS_DEFAULTS:
            raise QueueError(f"unknown queue setting {key!r}; known: {', '.join(SETTINGS_DEFAULTS)}")
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else SETTINGS_DEFAULTS[key]

    def set_setting(self, key: str, value: Any) -> None:
        default = SETTINGS_DEFAULTS.get(key)
        if key not in SETTINGS_DEFAULTS:
            raise ConfigError([(key, f"unknown queue setting; known: {', '.join(SETTINGS_DEFAULTS)}")])
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError([(key, f"must be true or false, got {value!r}")])
        if key == "queue.gpus":
            from studio.queue.gpus import parse_pool

            if isinstance(value, int) and not isinstance(value, bool):  # `gpus=3` read as JSON
                value = str(value)
            if not isinstance(value, str):
                raise ConfigError([(key, f"expected `auto`, GPU numbers like `0,1` or empty, got {value!r}")])
            try:
                parse_pool(value if value.strip() != "auto" else "")
            except QueueError as err:
                raise ConfigError([(key, str(err).partition(": ")[2])]) from None
        if isinstance(default, int) and not isinstance(default, bool) and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError([(key, f"must be a whole number >= 1, got {value!r}")])
        if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ConfigError([(key, f"must be a number of seconds >= 0, got {value!r}")])
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- adding -----------------------------------------------------------------------------
    def add(self, config: Any, kind: str = "train", name: str = "") -> Job:
        """Queue a job at the end. `config`: a JobConfig, or a dict that is validated here.

        The name is `name`, else `config.job.name`, else `{family}_{YYYYMMDD_HHMMSS}`; a taken
        name gets `_2`, `_3`, ... The run folder is `job.output_dir`, else STUDIO_HOME/runs/<name>.
        Raises ConfigError (naming the field) for a bad config, name or run folder.
        """
        if kind not in KINDS:
            raise QueueError(f"job kind must be one of {', '.join(KINDS)}, got {kind!r}")
        cfg = config if isinstance(config, JobConfig) else load_config(_as_dict(config))
        wanted = (name or cfg.job.name).strip()
        if wanted and not _NAME_RE.match(wanted):
            raise ConfigError([("job.name", f"{wanted!r}: use letters, digits, '.', '_' or '-' "
                                            "(it names the run folder)")])
        wanted = wanted or default_job_name(cfg.model.family)
        with self._tx() as conn:
            cfg = finalize_job(cfg, self._unique_name(conn, wanted))
            # Absolute, so the worker finds the run folder from any cwd.
            cfg.job.output_dir = str(Path(cfg.job.output_dir).expanduser().absolute())
            return self._insert(conn, cfg.model_dump(mode="json"), kind)

    def _unique_name(self, conn: sqlite3.Connection, wanted: str) -> str:
        rows = conn.execute("SELECT name FROM jobs WHERE name = ? OR name LIKE ?", (wanted, wanted + "_%"))
        taken = {r[0] for r in rows}
        name, n = wanted, 1
        while name in taken:
            n += 1
            name = f"{wanted}_{n}"
        return name

    def _insert(self, conn: sqlite3.Connection, config: dict, kind: str) -> Job:
        name, run_dir = config["job"]["name"], config["job"]["output_dir"]
        clash = conn.execute(
            "SELECT id, name, status FROM jobs WHERE run_dir = ? AND status IN ('pending', 'running')", (run_dir,)
        ).fetchone()
        if clash:
            raise ConfigError([("job.output_dir",
                f"{run_dir} is the run folder of job {clash['id']} '{clash['name']}' "
                f"({clash['status']}); leave it empty or choose another folder")])
        cur = conn.execute(
            "INSERT INTO jobs (name, kind, status, position, config, run_dir, cwd, created_at)"
            " VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)",
            (name, kind, self._next_position(conn), json.dumps(config), run_dir, os.getcwd(), time.time()),
        )
        return self._get(conn, cur.lastrowid)

    def clone(self, job_id: int, name: str = "") -> Job:
        """A new pending job with the same kind and config. The clone gets its own run folder
        when the original used the default one (STUDIO_HOME/runs/<name>)."""
        src = self.get(job_id)
        config = json.loads(json.dumps(src.config))
        default = studio_home() / "runs" / src.name
        if Path(src.run_dir) in (default, default / hub_folder_name(load_config(src.config))):
            config["job"]["output_dir"] = ""
        config["job"]["name"] = ""
        return self.add(config, kind=src.kind, name=name or src.name)

    def update(self, job_id: int, config: Any) -> Job:
        """Replace the config of a job that is not running (its name and run folder stay)."""
        current, config = self.get(job_id), _as_dict(config)
        config.setdefault("job", {}).update(name=current.name, output_dir=current.run_dir)
        config = load_config(config).model_dump(mode="json")
        with self._tx() as conn:
            job = self._get(conn, job_id)
            if job.status == "running":
                raise QueueError(f"job {job.id} '{job.name}' is running: stop it before editing its config")
            conn.execute("UPDATE jobs SET config = ? WHERE id = ?", (json.dumps(config), job.id))
            return self._get(conn, job.id)

    # -- user operations --------------------------------------------------------------------
    def move(self, job_id: int, index: int) -> list[Job]:
        """Move a pending job to `index` among the pending jobs (0 runs next, -1 last).

        Pending jobs swap their own positions only, so finished jobs keep their places.
        """
        with self._tx() as conn:
            job = self._get(conn, job_id)
            if job.status != "pending":
                raise QueueError(f"job {job.id} '{job.name}' is {job.status}: only pending jobs can be reordered")
            rows = conn.execute(
                "SELECT id, position FROM jobs WHERE status = 'pending' ORDER BY position, id").fetchall()
            slots = [r["position"] for r in rows]
            order = [r["id"] for r in rows if r["id"] != job.id]
            index = len(order) if index < 0 or index > len(order) else index
            order.insert(index, job.id)
            for jid, pos in zip(order, slots):
                conn.execute("UPDATE jobs SET position = ? WHERE id = ?", (pos, jid))
        return self.list(("pending",))

    def remove(self, job_id: int) -> Job:
        """Delete a job's row; its run folder stays on disk. Refused while the job runs."""
        with self._tx() as conn:
            job = self._get(conn, job_id)
            if job.status == "running":
                raise QueueError(
                    f"job {job.id} '{job.name}' is running and cannot be removed: "
                    f"stop it first (python -m studio queue stop {job.id}), then remove it"
                )
            conn.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
            return job

    def stop(self, job_id: int) -> Job:
        """Pending: becomes `stopped` at once. Running: ask the trainer to save and exit
        (control/STOP); the worker watching it escalates to SIGTERM/SIGKILL after the grace time."""
        with self._tx() as conn:
            job = self._get(conn, job_id)
            if job.status == "pending":
                conn.execute(
                    "UPDATE jobs SET status = 'stopped', finished_at = ?, error = 'stopped before it started'"
                    " WHERE id = ?",
                    (time.time(), job.id),
                )
            elif job.status == "running":
                conn.execute("UPDATE jobs SET stop_requested = 1 WHERE id = ?", (job.id,))
                runfolder.request_stop(Path(job.run_dir))
            else:
                raise QueueError(f"job {job.id} '{job.name}' is {job.status}: nothing to stop")
            return self._get(conn, job.id)

    def resume(self, job_id: int) -> Job:
        """Queue the job again (at the end) to continue from its own newest complete checkpoint."""
        return self._requeue(job_id, "resume", ("stopped", "interrupted", "failed"))

    def retry(self, job_id: int) -> Job:
        """Queue the job again (at the end) to run from the start. At launch its old checkpoints
        and progress log move to RUN_DIR/attempts/<n>/ so that nothing resumes from them."""
        return self._requeue(job_id, "retry", FINISHED)

    def _requeue(self, job_id: int, launch: str, allowed: tuple[str, ...], keep_position: bool = False,
                 note: str | None = None) -> Job:
        with self._tx() as conn:
            job = self._get(conn, job_id)
            if job.status not in allowed:
                hint = " (use retry to run it again from the start, or clone)" if job.status == "completed" else ""
                raise QueueError(f"job {job.id} '{job.name}' is {job.status}: cannot {launch} it{hint}")
            position = job.position if keep_position else self._next_position(conn)
            # A resume continues the run: its time so far is kept and the next launch adds to it.
            earlier = (job.duration_s or 0.0) if launch == "resume" else 0.0
            conn.execute(
                "UPDATE jobs SET status = 'pending', launch = ?, position = ?, stop_requested = 0,"
                " error = ?, exit_code = NULL, started_at = NULL, finished_at = NULL, earlier_s = ? WHERE id = ?",
                (launch, position, note, earlier, job.id),
            )
            return self._get(conn, job.id)

    # -- worker side ------------------------------------------------------------------------
    def claim_next(self, nonce: str) -> Job | None:
        """Atomically turn the first pending job into `running` for this launch (nonce), holding no
        GPU. Nothing is claimed while another job is running (the queue without a GPU pool)."""
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE status = 'running' LIMIT 1").fetchone():
                return None
            row = conn.execute("SELECT id FROM jobs WHERE status = 'pending' ORDER BY position, id LIMIT 1").fetchone()
            return None if row is None else self._claim(conn, row["id"], nonce, [])

    def claim(self, job_id: int, nonce: str, gpus: list[str]) -> Job | None:
        """Turn this pending job into `running` for this launch (nonce), holding these GPUs (the
        worker decides which job fits, studio/queue/gpus.py). None when it is no longer pending
        (stopped or removed since the worker looked)."""
        with self._tx() as conn:
            return self._claim(conn, job_id, nonce, gpus)

    def _claim(self, conn: sqlite3.Connection, job_id: int, nonce: str, gpus: list[str]) -> Job | None:
        cur = conn.execute(
            "UPDATE jobs SET status = 'running', nonce = ?, gpus = ?, pid = NULL, proc_start = NULL,"
            " started_at = ?, finished_at = NULL, exit_code = NULL, error = NULL, stop_requested = 0,"
            " attempts = attempts + 1 WHERE id = ? AND status = 'pending'",
            (nonce, ",".join(gpus) or None, time.time(), int(job_id)),
        )
        return self._get(conn, job_id) if cur.rowcount == 1 else None

    def refuse(self, job_id: int, error: str) -> bool:
        """A pending job that can never start here (e.g. more GPUs than the pool has) fails with `error`."""
        with self._tx() as conn:
            cur = conn.execute("UPDATE jobs SET status = 'failed', error = ?, finished_at = ?"
                               " WHERE id = ? AND status = 'pending'", (error, time.time(), int(job_id)))
            return cur.rowcount == 1

    def record_launch(self, job_id: int, nonce: str, *, pid: int | None = None,
                      proc_start: float | None = None, progress_offset: int | None = None) -> None:
        """Store what identifies this launch's process (only for the launch that owns `nonce`)."""
        sets, args = [], []
        for col, val in (("pid", pid), ("proc_start", proc_start), ("progress_offset", progress_offset)):
            if val is not None:
                sets.append(f"{col} = ?")
                args.append(val)
        if sets:
            with self._tx() as conn:
                conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND nonce = ?", (*args, job_id, nonce))

    def finish(self, job_id: int, nonce: str, status: str, *, exit_code: int | None = None,
               error: str | None = None, final_loss: float | None = None) -> bool:
        """Record the end of the launch that owns `nonce`. False when that launch was already
        finished (by another watcher), so a status is written exactly once per launch."""
        if status not in FINISHED:
            raise ValueError(f"not a final status: {status}")
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = ?, exit_code = ?, error = ?, final_loss = COALESCE(?, final_loss),"
                " finished_at = ? WHERE id = ? AND nonce = ? AND status = 'running'",
                (status, exit_code, error, final_loss, time.time(), job_id, nonce),
            )
            return cur.rowcount == 1

    def requeue_interrupted(self, job_id: int) -> Job:
        """`queue.auto_resume_interrupted`: resume in place, ahead of the jobs queued after it."""
        job = self.get(job_id)
        note = f"{job.error}; re-queued to resume" if job.error else "re-queued to resume"
        return self._requeue(job_id, "resume", ("interrupted",), keep_position=True, note=note)
