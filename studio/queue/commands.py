"""The exact command lines a job runs: used by the worker and by the generated queue script."""
from __future__ import annotations

import copy
import os
import shlex
import sys
from pathlib import Path

import studio

# The folder that holds the `studio` package: put on PYTHONPATH so `-m studio` works from any
# cwd (jobs run in the folder they were queued from, where their relative paths make sense).
PROJECT_ROOT = Path(studio.__file__).resolve().parent.parent


def launch_config(config: dict, launch: str) -> dict:
    """The config one launch runs with: `resume` continues from the run folder's newest
    complete checkpoint; `retry` starts over (its old checkpoints were archived)."""
    config = copy.deepcopy(config)
    if launch in ("resume", "retry"):
        config.setdefault("checkpointing", {})["auto_resume"] = launch == "resume"
    return config


def job_command(kind: str, config_path: Path, distributed: dict | None = None,
                python: str = sys.executable) -> list[str]:
    """`python -m studio train|preprocess CONFIG`, or through `accelerate launch` when the job's
    `distributed` section asks for several processes or for given GPUs."""
    studio_args = ["-m", "studio", kind, str(config_path)]
    launcher = accelerate_args(distributed or {})
    return [python, *launcher, *studio_args] if launcher else [python, *studio_args]


def accelerate_args(distributed: dict) -> list[str]:
    """`-m accelerate.commands.launch ...` for the `distributed` section, or [] for a plain process.

    The flags are accelerate's own (accelerate/commands/launch.py): none for DDP (what it launches for
    several processes on GPUs by itself), `--use_fsdp`,
    `--use_deepspeed --zero_stage N`, `--gpu_ids`; `accelerate_extra_args` goes last, so it can add
    anything else (a port, a config file).
    """
    processes = int(distributed.get("num_processes") or 1)
    gpu_ids = ",".join(p.strip() for p in str(distributed.get("gpu_ids") or "").split(",") if p.strip())
    if processes <= 1 and not gpu_ids:
        return []
    args = ["-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    strategy = distributed.get("strategy") or "ddp"
    if processes > 1:
        args += {"ddp": [], "fsdp": ["--use_fsdp"],  # DDP: accelerate's own choice for several processes
                 "deepspeed": ["--use_deepspeed", "--zero_stage", str(distributed.get("deepspeed_zero_stage", 2))]
                 }[strategy]
    if gpu_ids:
        args += ["--gpu_ids", gpu_ids]
    return args + shlex.split(str(distributed.get("accelerate_extra_args") or ""))


def job_env(nonce: str) -> dict[str, str]:
    env = dict(os.environ)
    env["STUDIO_JOB_NONCE"] = nonce  # marks every process of this launch (see procs.py)
    env["PYTHONUNBUFFERED"] = "1"  # console.log shows lines as they are printed
    paths = [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
