"""A queue row as the rest of the studio sees it (`Job`), its statuses and kinds, and the queue's errors."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

STATUSES = ("pending", "running", "completed", "stopped", "failed", "interrupted")
FINISHED = ("completed", "stopped", "failed", "interrupted")
KINDS = ("train", "preprocess", "estimate", "generate")  # generate: Playground (studio/playground.py)

class QueueError(Exception):
    """An operation the queue refuses; the message says why and what to do instead."""


class QueueCorrupt(QueueError):
    """The database file is damaged; the message names it and how to restore the backup."""


@dataclass
class Job:
    id: int
    name: str
    kind: str
    status: str
    position: int
    config: dict = field(repr=False)
    run_dir: str
    cwd: str
    launch: str  # how the next launch starts: fresh | resume | retry
    pid: int | None
    proc_start: float | None
    nonce: str | None
    progress_offset: int
    stop_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    error: str | None
    final_loss: float | None
    attempts: int
    gpus: str | None = None  # the GPUs this launch holds, comma-separated (the worker's GPU pool)
    earlier_s: float = 0.0  # time of the launches this one resumes (a retry starts again from 0)

    @property
    def duration_s(self) -> float | None:
        """Time the job has run: every launch since its last fresh start, this one included."""
        if self.started_at is None:
            return self.earlier_s or None
        return self.earlier_s + (self.finished_at or time.time()) - self.started_at

    @property
    def gpu_list(self) -> list[str]:
        """The GPUs held, while running (a finished row keeps its last assignment as a record)."""
        return [g for g in (self.gpus or "").split(",") if g] if self.status == "running" else []

    @property
    def num_processes(self) -> int:
        return int(self.distributed.get("num_processes") or 1)

    @property
    def distributed(self) -> dict:
        """The job's `distributed` section as stored."""
        return self.config.get("distributed") or {}

    @property
    def label(self) -> str:
        """The name as the queue list and the UI show it, with the user's `job.run_name`: `name (run_name)`."""
        run_name = (self.config.get("job") or {}).get("run_name")
        return f"{self.name} ({run_name})" if run_name else self.name

    def to_dict(self) -> dict:
        return asdict(self) | {"duration_s": self.duration_s}
