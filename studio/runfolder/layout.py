"""The names of the files in a run folder, and the queue's side of it (docs/architecture.md, "The run
folder").

The run folder is the only channel between the queue, the UI and a job: the worker writes
`config.json` and `control/STOP`, the job writes `progress.jsonl`, `console.log` and
`training_args.json`.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from studio.runfolder.atomic import atomic_write_text

CONFIG_FILE = "config.json"
PROGRESS_FILE = "progress.jsonl"
CONSOLE_FILE = "console.log"
TRAINING_ARGS_FILE = "training_args.json"
CONTROL_DIR = "control"
STOP_FILE = Path(CONTROL_DIR) / "STOP"
ATTEMPTS_DIR = "attempts"
ACCELERATE_CONFIG_FILE = "accelerate_config.json"  # several processes: what `accelerate launch` reads
TENSORBOARD_DIR = "runs"  # TensorBoard events (logging.log_dir empty), `runs/<job.run_name>/` with a run name
MLFLOW_DIR = "mlruns"  # MLflow's file store when logging.mlflow_tracking_uri is empty
COMET_DIR = "comet"  # Comet's offline archives (logging.trackers_offline); W&B writes `wandb/` itself
MANIFEST = "manifest.json"  # written last into checkpoint-<step>/: a checkpoint without it is incomplete
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def write_config(run_dir: Path, config: dict) -> Path:
    """Write the job's resolved config atomically (a reader never sees half a file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def archive_attempt(run_dir: Path, attempt: int) -> Path | None:
    """Move the previous attempt's checkpoints and progress log to `attempts/<n>/`.

    A retry starts fresh: a checkpoint left from before would otherwise be picked by
    auto-resume, or outlive the new run's checkpoints in "newest complete checkpoint" order.
    """
    run_dir = Path(run_dir)
    movable = sorted(run_dir.glob("checkpoint-*")) + [p for p in [run_dir / PROGRESS_FILE] if p.exists()]
    if not movable:
        return None
    dest = run_dir / ATTEMPTS_DIR / str(attempt)
    n = 1
    while dest.exists():  # a retry of a retry of the same attempt number never overwrites
        n += 1
        dest = run_dir / ATTEMPTS_DIR / f"{attempt}_{n}"
    dest.mkdir(parents=True)
    for path in movable:
        shutil.move(str(path), str(dest / path.name))
    return dest


def progress_path(run_dir: Path) -> Path:
    return Path(run_dir) / PROGRESS_FILE


def console_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONSOLE_FILE


def console_tail(run_dir: Path, lines: int = 5, max_bytes: int = 16384) -> str:
    """The last lines the job printed: the best error message a crash leaves."""
    path = Path(run_dir) / CONSOLE_FILE
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(line for line in text.splitlines()[-lines:])


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """`RUN_DIR/checkpoint-<step>`: complete only once its manifest is written (`is_complete`)."""
    return Path(run_dir) / f"checkpoint-{step}"


def is_complete(checkpoint: Path) -> bool:
    return (Path(checkpoint) / MANIFEST).is_file()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (manifest present), oldest first."""
    out = []
    for path in Path(run_dir).glob("checkpoint-*"):
        match = _CHECKPOINT.match(path.name)
        if match and is_complete(path):
            out.append((int(match.group(1)), path))
    return [p for _, p in sorted(out)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def archive_old_run(run_dir: Path) -> Path | None:
    """`job.overwrite`: move the old run's checkpoints, progress log and final files to attempts/<n>/."""
    from studio.config.outdir import FINAL_FILES, held_run

    if not held_run(run_dir):
        return None
    attempts = run_dir / ATTEMPTS_DIR
    n = 1 + sum(1 for _ in attempts.iterdir()) if attempts.is_dir() else 1
    dest = archive_attempt(run_dir, n) or (attempts / str(n))
    dest.mkdir(parents=True, exist_ok=True)
    for path in [run_dir / name for name in FINAL_FILES] + sorted(run_dir.glob("*_kohya.safetensors")):
        if path.is_file() or path.is_symlink():
            shutil.move(str(path), str(dest / path.name))
    return dest
