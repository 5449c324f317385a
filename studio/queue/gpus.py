"""The worker's GPU pool, what a job asks of it, and which pending jobs start on which GPUs.

    pool = parse_pool("0,1,2,3")       # or "auto" (the CUDA devices of this machine); "" -> None
    plan = schedule(pending, running, pool, cpu_jobs=1)
    plan.start   -> [(job, ["2", "3"]), ...]   launch these now, on these GPUs
    plan.refuse  -> [(job, "why"), ...]         jobs that can never fit this pool

Without a pool (None, the default) the queue runs one job at a time, as it always did.

With a pool, a job asks for GPUs: a `train` job for `distributed.num_processes` of them (exactly
`distributed.gpu_ids` when those are given), any other kind for one; a job on `model.device=cpu`
(and every job when the pool is empty, a machine without CUDA) asks for none and runs in one of
`queue.cpu_jobs` CPU slots. The rule: first fit in queue order, with reservation. Pending jobs are
taken in queue order; one that fits the free GPUs starts on them; one that does not fit reserves the
free GPUs it will take (up to its count), and no later job may start on those. So a job queued later
never delays an earlier one (a 2-GPU job is never starved by a stream of 1-GPU jobs), and jobs
queued later still use the GPUs nobody ahead of them waits for. A GPU is held by at most one job:
the assignment lives in the queue row (`jobs.gpus`), so after a crash the running rows alone say
which GPUs are busy, and a row that reconcile settles frees its GPUs.

No torch import: detection asks `CUDA_VISIBLE_DEVICES`, then `nvidia-smi`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from studio.queue.job import Job, QueueError

NO_GPU_DEVICES = ("cpu", "mps")


def detect() -> list[str]:
    """This machine's CUDA devices, as `CUDA_VISIBLE_DEVICES` would name them for a child process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [p.strip() for p in visible.split(",") if p.strip() and not p.strip().startswith("-")]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def parse_pool(text: str | None) -> list[str] | None:
    """`""`/None: no pool (one job at a time); `auto`: the detected GPUs; `0,1,3`: those ids."""
    text = (text or "").strip()
    if not text:
        return None
    if text == "auto":
        return detect()
    ids = [p.strip() for p in text.split(",") if p.strip()]
    if not ids or any(not p.isdigit() for p in ids) or len(set(ids)) != len(ids):
        raise QueueError(f"queue.gpus: expected `auto` or distinct comma-separated GPU numbers like `0,1,2,3`, "
                         f"got {text!r}")
    return ids


def demand(job: Job, pool: list[str] | None) -> tuple[int, list[str] | None]:
    """(how many GPUs, exactly which or None for any) this job needs from the pool."""
    if not pool or (job.config.get("model") or {}).get("device", "auto") in NO_GPU_DEVICES:
        return 0, None
    exact = [p.strip() for p in str(job.distributed.get("gpu_ids") or "").split(",") if p.strip()]
    if job.kind != "train":  # only training starts several processes
        return 1, exact[:1] or None
    return (len(exact), exact) if exact else (job.num_processes, None)


@dataclass
class Plan:
    start: list[tuple[Job, list[str]]] = field(default_factory=list)
    refuse: list[tuple[Job, str]] = field(default_factory=list)


def schedule(pending: list[Job], running: list[Job], pool: list[str] | None, cpu_jobs: int = 1) -> Plan:
    """Which pending jobs (in queue order) start now and on which GPUs (see the module's rule)."""
    plan = Plan()
    if pool is None:  # no pool: one job at a time, in queue order
        if pending and not running:
            plan.start.append((pending[0], []))
        return plan
    free = [g for g in pool if g not in {g for job in running for g in job.gpu_list}]
    cpu_busy = sum(1 for job in running if not job.gpu_list)
    for job in pending:
        count, exact = demand(job, pool)
        if count == 0:
            if cpu_busy < cpu_jobs:
                plan.start.append((job, []))
                cpu_busy += 1
            continue
        missing = [g for g in exact or () if g not in pool]
        if missing or count > len(pool):
            what = f"GPU {','.join(missing)}" if missing else f"{count} GPUs"
            plan.refuse.append((job, f"it asks for {what} but the queue's GPU pool is {','.join(pool)} "
                                     "(queue.gpus, or `queue run --gpus`); change distributed.num_processes / "
                                     "distributed.gpu_ids, or the pool"))
            continue
        wanted = exact if exact else free
        taken = [g for g in wanted if g in free][:count]
        if len(taken) == count:
            plan.start.append((job, taken))
        # Started or waiting, these GPUs are now spoken for: no later job starts on them.
        free = [g for g in free if g not in taken]
    return plan
