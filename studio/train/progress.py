"""`progress.jsonl`: the trainer's only channel to the queue and the UI (one JSON object per line)."""
from __future__ import annotations

import json
import time
from pathlib import Path


class ProgressLog:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int = 0):
        self.path = Path(run_dir) / "progress.jsonl"
        self.total = total_steps
        self.start_step = start_step
        self.t0 = time.time()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()

    def elapsed(self) -> float:
        return time.time() - self.t0

    def eta(self, step: int) -> float | None:
        done = step - self.start_step
        if done <= 0:
            return None
        return round(self.elapsed() / done * (self.total - step), 1)

    def step(self, step: int, epoch: int, loss: float, lr: float, **extra) -> None:
        self._write({"step": step, "total": self.total, "epoch": epoch, "loss": round(loss, 6), "lr": lr,
                     "elapsed_s": round(self.elapsed(), 2), "eta_s": self.eta(step), **extra,
                     "time": time.time()})

    def tick(self, step: int, epoch: int) -> None:
        """A step between `logging_steps` records: where the run is, without the loss (reading the loss
        every step would make a GPU wait for each step to finish)."""
        self._write({"step": step, "total": self.total, "epoch": epoch, "elapsed_s": round(self.elapsed(), 2),
                     "eta_s": self.eta(step), "time": time.time()})

    def event(self, name: str, **fields) -> None:
        self._write({"event": name, "time": time.time(), **fields})

    def close(self) -> None:
        self._fh.close()


def run_reported(progress: ProgressLog, what: str, work) -> int:
    """Run `work()` (returns the fields of the `done` event) so that every ending is a progress event:
    done (exit 0), stopped by Ctrl-C (130) or error (1). Used by preprocess and estimate jobs."""
    import logging

    try:
        progress.event("done", **work())
        return 0
    except KeyboardInterrupt:
        progress.event("stopped", message="interrupted from the keyboard")
        return 130
    except Exception as err:  # noqa: BLE001 - every failure ends with an error event
        logging.getLogger("studio").error("%s failed: %s", what, err,
                                          exc_info=not isinstance(err, (ValueError, OSError)))
        progress.event("error", message=str(err) or type(err).__name__, type=type(err).__name__)
        return 1
    finally:
        progress.close()


def read_progress(run_dir: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Records appended since byte `offset`, and the new offset (only whole lines are consumed)."""
    path = Path(run_dir) / "progress.jsonl"
    if not path.exists():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    end = chunk.rfind(b"\n") + 1
    records = []
    for line in chunk[:end].splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records, offset + end
