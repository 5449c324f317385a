"""Start-up reconciliation: make `running` rows true again after a worker or UI crash.

A `running` row whose process is alive (same pid, same start time, nonce in its environment) is
handed back to be adopted and watched. One whose process is gone is finished from what its run
folder says: a final `done`/`stopped`/`error` event in this launch's part of `progress.jsonl` is
the trainer's own word (it finished while nobody watched); without one it is `interrupted`, and
`queue.auto_resume_interrupted` re-queues it to continue from its checkpoint.

Call only while holding the worker lock: a worker that is busy launching a job has a `running`
row whose pid is not recorded yet.
"""
from __future__ import annotations

import logging
from pathlib import Path

import psutil

from studio import runfolder
from studio.queue import procs
from studio.queue.store import Job, JobStore

log = logging.getLogger("studio.queue")

_GONE_STATUS = {"done": "completed", "stopped": "stopped", "error": "failed"}


def status_when_gone(outcome: runfolder.Outcome) -> tuple[str, str | None]:
    """Final status of a launch whose process ended while no worker watched it."""
    status = _GONE_STATUS.get(outcome.last_event or "", "interrupted")
    if status == "failed":
        return status, outcome.message or "the trainer reported an error"
    if status == "interrupted":
        return status, "its process ended while no worker was watching (worker or machine stopped)"
    return status, None


def reconcile(store: JobStore, watched: frozenset[str] = frozenset()) -> tuple[list[tuple[Job, psutil.Process]], list[Job]]:
    """Settle every `running` row but those of the launches in `watched` (nonces: the calling worker
    watches them itself). Returns the (job, leader process) pairs still alive, to adopt, and the jobs
    settled here with a final status (not those re-queued to resume). A settled row no longer holds
    its GPUs (only running rows do), so the worker's next schedule can give them out again."""
    running = [job for job in store.list(("running",)) if job.nonce not in watched]
    if not running:
        return [], []
    alive, settled = [], []
    auto_resume = store.get_setting("queue.auto_resume_interrupted")
    for job in running:
        leader = procs.find_leader(job.pid, job.proc_start, job.nonce)
        if leader is not None:
            if job.pid is None:  # the worker died between spawning and recording the pid
                store.record_launch(job.id, job.nonce, pid=leader.pid, proc_start=leader.create_time())
            log.info("job %s '%s' is still running (pid %s): watching it", job.id, job.name, leader.pid)
            alive.append((store.get(job.id), leader))
            continue
        if job.nonce:
            procs.kill_leftovers(job.nonce)  # children orphaned by a leader that died
        outcome = runfolder.read_outcome(Path(job.run_dir), job.progress_offset)
        status, error = status_when_gone(outcome)
        if not store.finish(job.id, job.nonce or "", status, error=error, final_loss=outcome.final_loss):
            continue
        log.info("job %s '%s' was running when the queue stopped: now %s", job.id, job.name, status)
        if status == "interrupted" and auto_resume:
            store.requeue_interrupted(job.id)
            log.info("job %s '%s' re-queued to resume from its checkpoint", job.id, job.name)
        else:
            settled.append(store.get(job.id))
    return alive, settled
