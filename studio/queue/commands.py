"""The exact command lines a job runs: used by the worker and by the generated queue script."""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import studio

# The folder that holds the `studio` package: put on PYTHONPATH so `-m studio` works from any
# cwd (jobs run in the folder they were queued from, where their relative paths make sense).
PROJECT_ROOT = Path(studio.__file__).resolve().parent.parent


def launch_config(config: dict, launch: str, gpus: list[str] = (), port: int | None = None) -> dict:
    """The config one launch runs with: `resume` continues from the run folder's newest
    complete checkpoint; `retry` starts over (its old checkpoints were archived). `gpus`: the GPUs
    the worker's pool gave this launch (they become `distributed.gpu_ids`, so accelerate's config
    names the same GPUs as CUDA_VISIBLE_DEVICES); `port`: a main process port no other running
    job uses."""
    config = copy.deepcopy(config)
    if gpus:
        config.setdefault("distributed", {})["gpu_ids"] = ",".join(gpus)
    if port is not None:
        config.setdefault("distributed", {})["main_process_port"] = port
    if launch in ("resume", "retry"):
        config.setdefault("checkpointing", {})["auto_resume"] = launch == "resume"
    if launch == "retry":  # the trainer refuses a folder holding a finished run unless told to start afresh
        config.setdefault("job", {})["overwrite"] = True
    return config


def job_command(kind: str, config_path: Path, python: str = sys.executable) -> list[str]:
    """`python -m studio train|preprocess|estimate CONFIG`. A job on several processes starts the same
    way: the studio then writes the accelerate config into the run folder and runs `accelerate launch`
    (studio/distributed.py), so the queue, the generated script and the CLI share one path."""
    return [python, "-m", "studio", kind, str(config_path)]


def job_env(nonce: str, gpus: list[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    env["STUDIO_JOB_NONCE"] = nonce  # marks every process of this launch (see procs.py)
    if gpus:  # the job sees only the GPUs the worker's pool gave it
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    env["PYTHONUNBUFFERED"] = "1"  # console.log shows lines as they are printed
    paths = [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
