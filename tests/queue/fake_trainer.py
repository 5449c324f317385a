"""A stand-in for `python -m studio train` that speaks the run-folder contract (docs/architecture.md).

    python fake_trainer.py train CONFIG.json     # what the worker launches in these tests
    python fake_trainer.py worker [POLL_S]       # a queue worker that launches the line above

Its behaviour comes from the job's free label `job.run_name`, e.g. "steps=20,sleep=0.05,mode=no_done":
  steps, sleep (s per step), ckpt_every (steps), children (lingering child processes),
  hold=1 (before the final event, wait until RUN_DIR/RELEASE exists),
  mode: normal | no_done (exit 0 without the final event) | crash (error event, exit 3) |
        stubborn (ignores STOP and SIGTERM: only SIGKILL ends it).
Each launch appends one line to RUN_DIR/launches.txt ("<pid> <resumed-from-step>") and prints the
CUDA_VISIBLE_DEVICES it was given; every progress record carries its wall-clock `time`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def _options(config: dict) -> dict:
    opts = {"steps": 10, "sleep": 0.02, "ckpt_every": 0, "children": 0, "hold": 0, "mode": "normal"}
    for item in filter(None, config["job"].get("run_name", "").split(",")):
        key, _, value = item.partition("=")
        opts[key] = value if key == "mode" else float(value)
    return opts


def _latest_checkpoint(run_dir: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in run_dir.glob("checkpoint-*") if (p / "manifest.json").exists()]
    return max(steps, default=0)


def _commit_checkpoint(run_dir: Path, step: int) -> None:
    tmp = run_dir / f".tmp-checkpoint-{step}"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    (tmp / "manifest.json").write_text(json.dumps({"step": step}))  # last: marks it complete
    os.rename(tmp, run_dir / f"checkpoint-{step}")


def _spawn_children(count: int) -> None:
    # Like torchrun ranks: their own session (outside the job's process group), and deaf to
    # SIGTERM, so only the nonce-based cleanup can find and end them.
    code = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    for _ in range(count):
        subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def train(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    run_dir = Path(config["job"]["output_dir"])
    opts = _options(config)
    start = _latest_checkpoint(run_dir) if config["checkpointing"]["auto_resume"] else 0
    with open(run_dir / "launches.txt", "a") as f:
        f.write(f"{os.getpid()} {start}\n")
    print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}", flush=True)
    if opts["mode"] == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _spawn_children(int(opts["children"]))
    total = int(opts["steps"])
    log = open(run_dir / "progress.jsonl", "a")

    def emit(record: dict) -> None:
        log.write(json.dumps({**record, "time": time.time()}) + "\n")
        log.flush()

    for step in range(start + 1, total + 1):
        time.sleep(opts["sleep"])
        emit({"step": step, "total": total, "epoch": 0, "loss": 1.0 / step, "lr": 1e-4, "elapsed_s": 0, "eta_s": 0})
        print(f"step {step}/{total}", flush=True)
        if opts["mode"] == "crash" and step == total // 2:
            emit({"event": "error", "message": "fake trainer crashed on purpose"})
            return 3
        if (run_dir / "control" / "STOP").exists() and opts["mode"] != "stubborn":
            _commit_checkpoint(run_dir, step)
            emit({"event": "checkpoint", "step": step})
            emit({"event": "stopped", "step": step})
            return 0
        if opts["ckpt_every"] and step % int(opts["ckpt_every"]) == 0:
            _commit_checkpoint(run_dir, step)
            emit({"event": "checkpoint", "step": step})
    deadline = time.monotonic() + 60
    while opts["hold"] and not (run_dir / "RELEASE").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if opts["mode"] != "no_done":
        emit({"event": "done", "step": total})
    return 0


def command(job, config_path: Path) -> list[str]:
    """Worker command builder: launch this stand-in instead of `python -m studio train`."""
    return [sys.executable, str(HERE), "train", str(config_path)]


def worker(poll_s: float) -> int:
    import logging

    sys.path.insert(0, str(HERE.parents[2]))
    from studio.queue import JobStore, Worker

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the tests read what it says

    Worker(JobStore(), poll_s=poll_s, command=command).run_until_empty()
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "train":
        sys.exit(train(sys.argv[2]))
    sys.exit(worker(float(sys.argv[2]) if len(sys.argv) > 2 else 0.05))
