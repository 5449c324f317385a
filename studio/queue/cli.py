"""`python -m studio queue ...`: the persistent job queue from the command line.

    add CONFIG.json [--set k=v ...] [--kind train|preprocess] [--name NAME]
    list [--json]                  run [--until-empty] [--gpus auto|0,1,...]
    stop ID | resume ID | retry ID | remove ID | clone ID [--name NAME] | move ID INDEX
    script [--out FILE]            settings [KEY=VALUE ...]    restore

Exit codes: 0 ok, 2 config error (names the field), 1 anything else.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from studio.config.errors import ConfigError
from studio.queue.store import KINDS, SETTINGS_DEFAULTS, Job, JobStore, QueueError

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studio queue", description="the persistent job queue")
    sub = parser.add_subparsers(dest="op", required=True)
    p = sub.add_parser("add", help="queue a job from a JSON config")
    p.add_argument("config", help="JSON config file (a preset or a saved job)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting; VALUE is parsed as JSON when it can be, else taken as a string")
    p.add_argument("--kind", choices=KINDS, default="train", help="train (default) or preprocess")
    p.add_argument("--name", default="", help="job name (default: job.name, else {family}_{YYYYMMDD_HHMMSS})")
    p = sub.add_parser("list", help="the jobs in queue order")
    p.add_argument("--json", action="store_true", help="machine-readable, one JSON array")
    p = sub.add_parser("run", help="run the queue in the foreground (Ctrl-C stops the current job)")
    p.add_argument("--until-empty", action="store_true",
                   help="exit when no job is pending, with a summary (exit 1 when a job did not complete)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between checks (default 1)")
    p.add_argument("--gpus", default=None, metavar="auto|0,1,...",
                   help="GPU pool: run jobs side by side on disjoint GPUs (`auto`: every CUDA device); "
                        "default: the queue.gpus setting; empty: one job at a time")
    for op, text in (("stop", "stop a job (a running one saves a checkpoint first)"),
                     ("resume", "continue a stopped/interrupted/failed job from its checkpoint"),
                     ("retry", "run a finished job again from the start"),
                     ("remove", "delete a job that is not running (its run folder stays)")):
        sub.add_parser(op, help=text).add_argument("id", type=int)
    p = sub.add_parser("clone", help="queue a copy of a job")
    p.add_argument("id", type=int)
    p.add_argument("--name", default="")
    p = sub.add_parser("move", help="move a pending job to INDEX among pending jobs (0 runs next)")
    p.add_argument("id", type=int)
    p.add_argument("index", type=int)
    p = sub.add_parser("script", help="write a bash script with the exact commands of the pending jobs")
    p.add_argument("--out", default="", help="file to write (default: print it)")
    p.add_argument("--gpus", default=None, help="plan for this GPU pool (`auto` or ids like `0,1,2,3`): jobs "
                   "run in waves side by side on disjoint GPUs; default: the queue.gpus setting")
    sub.add_parser("restore", help="replace a damaged queue database with its backup (queue.db.bak); the "
                   "damaged file is kept as queue.db.damaged-<time>")
    p = sub.add_parser("settings", help="show or change queue settings: " + ", ".join(SETTINGS_DEFAULTS))
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE")
    return parser


def format_duration(seconds: float | None, missing: str = "-") -> str:
    """H:MM:SS (shared by the CLI tables and the UI's queue table)."""
    if seconds is None:
        return missing
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _list_rows(jobs: list[Job]) -> str:
    rows = [[str(j.id), j.label, j.kind, j.status, ",".join(j.gpu_list) or "-", format_duration(j.duration_s),
             str(j.attempts), (j.error or "").splitlines()[0][:60] if j.error else ""] for j in jobs]
    return _table(rows, ["id", "name", "kind", "status", "gpus", "duration", "runs", "note"])


def summary_table(jobs: list[Job]) -> str:
    """The end-of-run summary: job, status, duration, final loss, output folder."""
    rows = [[f"{j.id} {j.name}", j.status, format_duration(j.duration_s),
             "-" if j.final_loss is None else f"{j.final_loss:.4g}", j.run_dir] for j in jobs]
    return _table(rows, ["job", "status", "duration", "final loss", "output folder"])


def _settle_if_idle(store: JobStore) -> None:
    """With no worker alive, nobody watches `running` rows: settle them now so `list` tells the
    truth (a job still alive stays running; the next worker adopts it)."""
    from studio.queue.reconcile import reconcile
    from studio.queue.worker import WorkerLock

    lock = WorkerLock(store.path)
    if lock.acquire():
        try:
            reconcile(store)
        finally:
            lock.release()


def _add(store: JobStore, args: argparse.Namespace) -> int:
    from studio.config import finalize_job, load_config
    from studio.config.preflight import preflight

    cfg = load_config(args.config, args.overrides)
    preflight(finalize_job(cfg, args.name or None), args.kind)  # the checks `train` makes, before a row exists
    job = store.add(cfg, kind=args.kind, name=args.name)
    print(f"queued job {job.id} '{job.name}' ({job.kind}); run folder {job.run_dir}")
    return EXIT_OK


def _run(store: JobStore, args: argparse.Namespace) -> int:
    from studio.queue.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s queue: %(message)s", datefmt="%H:%M:%S")
    worker = Worker(store, poll_s=args.poll, gpus=args.gpus)
    worker.pool()  # a bad --gpus is named before anything runs
    if args.until_empty:
        started = time.time()
        finished = worker.run_until_empty()
        print(f"\nqueue empty after {format_duration(time.time() - started)}; {len(finished)} job(s) ran")
        if finished:
            print(summary_table(finished))
        return EXIT_OK if all(j.status == "completed" for j in finished) else EXIT_ERROR
    import threading

    try:
        worker.run_forever(threading.Event())  # until Ctrl-C (twice leaves the job running)
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def _settings(store: JobStore, assignments: list[str]) -> int:
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError([(item, "expected KEY=VALUE")])
        key = key if key.startswith("queue.") else f"queue.{key}"
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        store.set_setting(key, value)
    for key in SETTINGS_DEFAULTS:
        print(f"{key} = {json.dumps(store.get_setting(key))}")
    return EXIT_OK


def _restore() -> int:
    from studio.paths import studio_home
    from studio.queue import backup
    from studio.queue.worker import WorkerLock

    db = studio_home() / "queue.db"
    lock = WorkerLock(db)
    if not lock.acquire():
        raise QueueError("a queue worker is running; stop it (and the studio app) before restoring")
    try:
        restored, kept = backup.restore(db)
    except (FileNotFoundError, ValueError) as err:
        raise QueueError(str(err)) from None
    finally:
        lock.release()
    print(f"restored {restored} from {backup.backup_path(db)}" + (f"; the damaged file is kept as {kept}" if kept else ""))
    return EXIT_OK


def _dispatch(store: JobStore, args: argparse.Namespace) -> int:
    op = args.op
    if op == "add":
        return _add(store, args)
    if op == "run":
        return _run(store, args)
    if op == "list":
        _settle_if_idle(store)
        jobs = store.list()
        print(json.dumps([j.to_dict() for j in jobs], indent=2) if args.json else
              (_list_rows(jobs) if jobs else "the queue is empty"))
        return EXIT_OK
    if op == "script":
        from studio.queue.script import queue_script

        text = queue_script(store, args.gpus)  # a bad pool is a QueueError: exit 1, named
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"queue script written to {args.out}")
        else:
            sys.stdout.write(text)
        return EXIT_OK
    if op == "settings":
        return _settings(store, args.assignments)
    if op == "move":
        store.move(args.id, args.index)
        _dispatch(store, argparse.Namespace(op="list", json=False))
        return EXIT_OK
    job = {"stop": store.stop, "resume": store.resume, "retry": store.retry, "remove": store.remove,
           "clone": lambda i: store.clone(i, args.name)}[op](args.id)
    done = {"stop": "stopping" if job.status == "running" else "stopped", "resume": "queued to resume",
            "retry": "queued to run again from the start", "remove": "removed (its run folder stays)",
            "clone": "queued as a copy"}[op]
    print(f"job {job.id} '{job.name}': {done}")
    if op == "stop" and job.status == "running":
        _note_unwatched(store)
    return EXIT_OK


def _note_unwatched(store: JobStore) -> None:
    from studio.queue.worker import WorkerLock

    lock = WorkerLock(store.path)
    if lock.acquire():  # no worker: the trainer still sees STOP, but nobody escalates or records it
        lock.release()
        print("no queue worker is running: the job stops at its next step; its status is recorded "
              "by the next `queue run` or `queue list`")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.op == "restore":  # the one command that must not open the (damaged) database first
            return _restore()
        return _dispatch(JobStore(), args)
    except ConfigError as err:
        print(f"config error:\n{err}", file=sys.stderr)
        return EXIT_CONFIG
    except QueueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
