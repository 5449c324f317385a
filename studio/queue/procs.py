"""Finding and ending a job's processes without ever touching someone else's.

A job is identified by three things recorded at launch: the leader's pid, the leader's start time
and a per-launch nonce that the worker puts in the environment (`STUDIO_JOB_NONCE`). Every
descendant inherits the environment, including the ones that leave the process group
(torchrun starts its ranks with `start_new_session=True`), so "the job's processes" are the
processes whose environment carries the nonce. A pid recycled by an unrelated process never
matches, so it is never signalled.
"""
from __future__ import annotations

import os
import signal

import psutil

NONCE_ENV = "STUDIO_JOB_NONCE"
# psutil derives start times from clock ticks since boot (1/100 s); two reads of the same process
# agree far more closely than this, two different processes almost never fall inside it.
START_TIME_TOLERANCE_S = 0.05


def is_alive(proc: psutil.Process) -> bool:
    try:
        # An orphaned child that nobody reaps stays a zombie: it is finished, not alive.
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _has_nonce(proc: psutil.Process, nonce: str) -> bool:
    try:
        return proc.environ().get(NONCE_ENV) == nonce
    except psutil.Error:  # gone, or another user's process: not ours either way
        return False


def find_leader(pid: int | None, proc_start: float | None, nonce: str | None) -> psutil.Process | None:
    """The job's leader process when it is still alive and provably the one we launched.

    With a recorded pid, it must match pid, start time and nonce. Without one (the worker died
    between spawning and recording the pid), look for the oldest live process with the nonce.
    """
    if not nonce:
        return None
    if pid:
        try:
            proc = psutil.Process(pid)
            same_start = proc_start is None or abs(proc.create_time() - proc_start) < START_TIME_TOLERANCE_S
        except psutil.Error:
            return None
        return proc if same_start and is_alive(proc) and _has_nonce(proc, nonce) else None
    found = job_processes(nonce)
    return min(found, key=lambda p: p.create_time()) if found else None


def job_processes(nonce: str) -> list[psutil.Process]:
    """Every live process that carries this launch's nonce (leader, children, torchrun ranks)."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter():
        if proc.pid != me and is_alive(proc) and _has_nonce(proc, nonce):
            found.append(proc)
    return found


def signal_job(nonce: str, sig: signal.Signals, leader_pid: int | None = None) -> int:
    """Send `sig` to the job's process group and to every process carrying its nonce.

    The group is signalled only through a verified leader (its pgid is its pid because the worker
    starts it with `start_new_session=True`), which also reaches members that cleared their
    environment. Returns how many nonce-carrying processes were found.
    """
    procs = job_processes(nonce)
    if leader_pid and any(p.pid == leader_pid for p in procs):
        try:
            os.killpg(leader_pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in procs:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass
    return len(procs)


def kill_leftovers(nonce: str, term_wait_s: float = 3.0) -> int:
    """After the leader ended: SIGTERM, then SIGKILL, whatever still carries the nonce
    (a DataLoader worker or a torchrun rank must not outlive its job). Returns how many."""
    procs = job_processes(nonce)
    if not procs:
        return 0
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=term_wait_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=term_wait_s)
    return len(procs)
