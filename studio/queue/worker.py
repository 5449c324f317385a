"""The queue worker: runs pending jobs, each as its own subprocess: one at a time, or side by side
on disjoint GPUs of a GPU pool (`queue.gpus`, `queue run --gpus`; the rule is in gpus.py).

    worker = Worker(JobStore(), poll_s=1.0)
    worker.run_until_empty()            # CLI `queue run --until-empty`; returns the finished jobs
    worker.run_forever(stop_event)      # the UI's background thread; returns when the event is set

Only one worker works on a queue at a time (an OS file lock beside the database, released by
the kernel even when the worker is SIGKILLed). A job runs in its own process group and session
with the launch's nonce in its environment, so killing the worker (or pressing Ctrl-C in its
terminal) never kills the job: the next worker adopts it (see reconcile.py). Leaving
`run_forever` also leaves the running jobs running, for the next worker to adopt.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from studio import runfolder
from studio.queue import commands, gpus, procs
from studio.queue.reconcile import reconcile
from studio.queue.store import Job, JobStore, QueueError

log = logging.getLogger("studio.queue")

# (job, path of its config.json) -> argv. Tests swap in a stand-in trainer through this.
CommandBuilder = Callable[[Job, Path], list[str]]


def default_command(job: Job, config_path: Path) -> list[str]:
    return commands.job_command(job.kind, config_path)


class WorkerBusy(QueueError):
    """Another worker already runs this queue."""


class WorkerLock:
    """`flock` on `<db>.worker.lock`; the holder's pid is written in it for the message."""

    def __init__(self, db_path: Path):
        self.path = Path(str(db_path) + ".worker.lock")
        self._fd: int | None = None

    def acquire(self, wait_s: float = 0.0) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"


@dataclass
class _Launch:
    """One launch being watched: ours (popen set) or adopted after a restart (leader only)."""

    job: Job
    leader: psutil.Process | None
    popen: subprocess.Popen | None = None
    stop_seen_at: float | None = None
    signals_sent: list[str] = field(default_factory=list)
    last_signal_at: float = 0.0


class Worker:
    """`gpus`: the GPU pool for this worker (`auto`, `0,1,2,3`); None reads the `queue.gpus` setting
    each time it schedules, and an empty pool runs one job at a time (studio/queue/gpus.py)."""

    def __init__(self, store: JobStore, poll_s: float = 1.0, command: CommandBuilder = default_command,
                 gpus: str | None = None):
        self.store = store
        self.poll_s = poll_s
        self.command = command
        self.gpus = gpus
        self.lock = WorkerLock(store.path)
        self._draining = False  # after a Ctrl-C: finish (stop) the current jobs, claim no more
        self._active: list[_Launch] = []  # the launches this worker watches
        self._pools: dict[str, list[str] | None] = {}  # pool text -> ids (detection runs once)

    # -- loops ------------------------------------------------------------------------------
    def run_until_empty(self) -> list[Job]:
        """Run (or adopt) jobs until none is pending or running; return those that ended, in order
        (including jobs that ended while no worker watched, settled at start)."""
        if not self.lock.acquire(wait_s=3.0):  # `queue list` holds it for a moment while it settles rows
            raise WorkerBusy(f"another queue worker is running (pid {self.lock.holder()}); "
                             "it will run the pending jobs")
        finished = []
        try:
            while True:
                try:
                    finished += self.tick()
                    if not self._active and (self._draining or not self.store.list(("pending",))):
                        break
                    time.sleep(self.poll_s)
                except KeyboardInterrupt:
                    self._drain()
        finally:
            self.lock.release()
        return finished

    def run_forever(self, stop_event: threading.Event) -> None:
        """Serve the queue until `stop_event` is set. When another process holds the worker
        lock, wait for it: this worker takes over when that one exits. Leaving leaves the running
        jobs running, for the next worker to adopt."""
        try:
            while not stop_event.is_set():
                if self.lock.acquire():
                    break
                stop_event.wait(max(self.poll_s, 1.0))
            while not stop_event.is_set() and not (self._draining and not self._active):
                try:
                    self.tick()
                except KeyboardInterrupt:
                    self._drain()
                    continue
                except Exception:  # noqa: BLE001 - e.g. a locked or full disk: keep serving the UI
                    log.exception("queue worker error; retrying in %.0f s", max(self.poll_s, 5.0))
                    stop_event.wait(max(self.poll_s, 5.0))
                    continue
                stop_event.wait(self.poll_s)
            if self._active and stop_event.is_set():
                log.info("worker leaving; job(s) %s keep running and will be adopted",
                         ", ".join(str(launch.job.id) for launch in self._active))
        finally:
            self.lock.release()

    def _drain(self) -> None:
        """Ctrl-C: stop the running jobs (each saves a checkpoint) and claim no more; a second
        Ctrl-C leaves them running for the next worker to adopt."""
        if self._draining:
            raise KeyboardInterrupt
        self._draining = True
        for launch in self._active:
            log.warning("Ctrl-C: stopping job %s '%s' (it saves a checkpoint); Ctrl-C again "
                        "to leave it running", launch.job.id, launch.job.name)
            self.store.stop(launch.job.id)

    def tick(self) -> list[Job]:
        """One round: settle or adopt `running` rows nobody watches, start every pending job that
        fits (studio/queue/gpus.py), check the watched jobs. Returns the jobs that ended."""
        ended = []
        alive, settled = reconcile(self.store, frozenset(launch.job.nonce for launch in self._active))
        ended += settled
        self._active += [_Launch(job, leader) for job, leader in alive]
        if not self._draining:
            ended += self._start_fitting()
        settings = {k: self.store.get_setting(f"queue.{k}") for k in ("stop_grace_s", "kill_grace_s")}
        for launch in list(self._active):
            exit_code, done = self._poll(launch)
            if done:
                self._active.remove(launch)
                ended.append(self._settle(launch, exit_code))
            else:
                self._enforce_stop(launch, **settings)
        return ended

    def pool(self) -> list[str] | None:
        text = self.gpus if self.gpus is not None else self.store.get_setting("queue.gpus")
        if text not in self._pools:
            self._pools[text] = gpus.parse_pool(text)
            if self._pools[text] is not None:
                log.info("GPU pool: %s", ",".join(self._pools[text]) or "empty (no CUDA device): CPU jobs only")
        return self._pools[text]

    def _start_fitting(self) -> list[Job]:
        pending = self.store.list(("pending",))
        if not pending:
            return []
        running = self.store.list(("running",))
        plan = gpus.schedule(pending, running, self.pool(), self.store.get_setting("queue.cpu_jobs"))
        ended = []
        for job, message in plan.refuse:
            if self.store.refuse(job.id, message):
                log.error("job %s '%s' cannot run here: %s", job.id, job.name, message)
                ended.append(self.store.get(job.id))
        for job, held in plan.start:
            job = self.store.claim(job.id, secrets.token_hex(16), held)
            if job is None:  # stopped or removed since we looked
                continue
            launch = self._launch(job, held, running)
            if launch:
                self._active.append(launch)
                running.append(launch.job)
            else:
                ended.append(self.store.get(job.id))
        return ended

    # -- launching --------------------------------------------------------------------------
    def _launch(self, job: Job, held: list[str] = (), running: list[Job] = ()) -> _Launch | None:
        run_dir = Path(job.run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            if job.launch == "retry":
                runfolder.archive_attempt(run_dir, job.attempts - 1)
            runfolder.clear_stop(run_dir)
            config = commands.launch_config(job.config, job.launch, held, _port(job, running))
            config_path = runfolder.write_config(run_dir, config)
            offset = runfolder.progress_size(run_dir)
            self.store.record_launch(job.id, job.nonce, progress_offset=offset)
            argv = self.command(job, config_path)
            with open(run_dir / runfolder.CONSOLE_FILE, "ab") as console:
                on_gpus = f" on GPU {','.join(held)}" if held else ""
                header = f"\n=== queue: job {job.id} '{job.name}' launch {job.attempts} ({job.launch}){on_gpus} " \
                         f"at {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(argv)}\n"
                console.write(header.encode())
                console.flush()
                popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                    cwd=job.cwd if os.path.isdir(job.cwd) else None, env=commands.job_env(job.nonce, held),
                    start_new_session=True,  # own group and session: outlives the worker, killable as one
                )
        except Exception as err:  # noqa: BLE001 - a job that cannot start fails; the queue goes on
            self.store.finish(job.id, job.nonce, "failed", error=f"could not start the job: {err}")
            log.error("job %s '%s' could not start: %s", job.id, job.name, err)
            return None
        leader = None
        try:
            leader = psutil.Process(popen.pid)
            self.store.record_launch(job.id, job.nonce, pid=popen.pid, proc_start=leader.create_time())
        except psutil.Error:  # it already ended; the exit code tells the rest
            pass
        log.info("job %s '%s' (%s) started%s: pid %s, run folder %s", job.id, job.name, job.kind,
                 f" on GPU {','.join(held)}" if held else "", popen.pid, run_dir)
        return _Launch(self.store.get(job.id), leader, popen)

    # -- watching ---------------------------------------------------------------------------
    def _poll(self, launch: _Launch) -> tuple[int | None, bool]:
        if launch.popen is not None:
            code = launch.popen.poll()
            return code, code is not None
        return None, launch.leader is None or not procs.is_alive(launch.leader)

    def _enforce_stop(self, launch: _Launch, stop_grace_s: float, kill_grace_s: float) -> None:
        """STOP file first (the trainer saves and exits), then SIGTERM, then SIGKILL the group."""
        now = time.monotonic()
        if launch.stop_seen_at is None:
            if not self.store.get(launch.job.id).stop_requested:
                return
            launch.stop_seen_at = now
            runfolder.request_stop(Path(launch.job.run_dir))  # again: the launch may have cleared it
            log.info("job %s: stop requested; SIGTERM in %.0f s if it has not exited", launch.job.id, stop_grace_s)
            return
        if not launch.signals_sent and now - launch.stop_seen_at >= stop_grace_s:
            self._signal(launch, signal.SIGTERM)
        elif launch.signals_sent and now - launch.last_signal_at >= kill_grace_s:
            self._signal(launch, signal.SIGKILL)  # repeated each grace period until it is gone

    def _signal(self, launch: _Launch, sig: signal.Signals) -> None:
        leader_pid = launch.leader.pid if launch.leader is not None else None
        count = procs.signal_job(launch.job.nonce, sig, leader_pid)
        if sig.name not in launch.signals_sent:
            launch.signals_sent.append(sig.name)
        launch.last_signal_at = time.monotonic()
        log.warning("job %s did not stop in time: %s sent to %d process(es)", launch.job.id, sig.name, count)

    def _settle(self, launch: _Launch, exit_code: int | None) -> Job:
        job = launch.job
        leftovers = procs.kill_leftovers(job.nonce)
        if leftovers:
            log.warning("job %s: %d leftover process(es) of the job were ended", job.id, leftovers)
        outcome = runfolder.read_outcome(Path(job.run_dir), job.progress_offset)
        status, error = decide_status(exit_code, outcome, launch.signals_sent, adopted=launch.popen is None)
        if status == "failed" and error and error.startswith("exit code"):
            tail = runfolder.console_tail(Path(job.run_dir))
            error = f"{error}; last output:\n{tail}" if tail else error
        self.store.finish(job.id, job.nonce, status, exit_code=exit_code, error=error, final_loss=outcome.final_loss)
        job = self.store.get(job.id)
        log.info("job %s '%s' %s%s", job.id, job.name, job.status, f": {job.error}" if job.error else "")
        return job


def decide_status(exit_code: int | None, outcome: runfolder.Outcome, signals_sent: list[str],
                  adopted: bool = False) -> tuple[str, str | None]:
    """Final status from the exit code and this launch's last progress event.

    An exit 0 is `completed` only with a final `done` event. `exit_code` is None for an adopted
    process (not our child, so its exit code cannot be read): then the event alone decides.
    """
    clean = exit_code == 0 or (adopted and exit_code is None)
    if clean and outcome.last_event == runfolder.Event.DONE:
        return "completed", None
    if clean and outcome.last_event == runfolder.Event.STOPPED:
        return "stopped", None
    if outcome.last_event == runfolder.Event.ERROR:
        return "failed", outcome.message or "the trainer reported an error"
    if signals_sent:
        return "stopped", (f"did not stop within the grace period and was ended with {'/'.join(signals_sent)}; "
                           "resume continues from the newest complete checkpoint")
    if exit_code == 0:
        return "failed", "the trainer exited 0 without a final 'done' event in progress.jsonl"
    if exit_code is None:
        return "failed", "the process ended without a final event (exit code unknown: adopted after a worker restart)"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = str(-exit_code)
        return "failed", f"exit code {exit_code} (killed by signal {name})"
    return "failed", f"exit code {exit_code}"


def _port(job: Job, running: list[Job]) -> int | None:
    """A main process port for a job of several processes on this machine that no running job uses
    (two DDP jobs side by side must not meet on one port). None: keep the job's own."""
    d = job.distributed
    if job.kind != "train" or int(d.get("num_processes") or 1) < 2 or int(d.get("num_machines") or 1) > 1:
        return None
    taken = set()
    for other in running:
        if other.id != job.id and int(other.distributed.get("num_processes") or 1) > 1:
            try:  # the port it was launched with
                launched = json.loads((Path(other.run_dir) / runfolder.CONFIG_FILE).read_text())
                taken.add(int(launched["distributed"]["main_process_port"]))
            except (OSError, ValueError, KeyError, TypeError):
                taken.add(int(other.distributed.get("main_process_port") or 29500))
    port = int(d.get("main_process_port") or 29500)
    while port in taken or not _bindable(port):
        port += 1
    return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True
