"""The persistent job queue: a SQLite store (store.py) and a worker that runs one job at a time
as a subprocess and survives crashes (worker.py, reconcile.py). See docs/architecture.md, "The queue"."""
from studio.queue.script import queue_script
from studio.queue.store import FINISHED, STATUSES, Job, JobStore, QueueError
from studio.queue.worker import Worker, WorkerBusy

__all__ = ["FINISHED", "STATUSES", "Job", "JobStore", "QueueError", "Worker", "WorkerBusy",
           "queue_script"]
