"""Several processes, one or more machines: the accelerate config a job launches with.

The studio never launches processes itself. `distributed.*` becomes an accelerate config file
(`RUN_DIR/accelerate_config.json`) and the job runs as

    python -m accelerate.commands.launch --config_file RUN_DIR/accelerate_config.json -m studio train RUN_DIR/config.json

on every machine (the machine rank differs). accelerate starts the processes through torchrun's
launcher, which ends every rank as soon as one fails; inside, `Accelerator()` reads the strategy
(DDP, FSDP2, DeepSpeed) from the environment the launcher sets.

No torch import here: the queue, the CLI and the UI build commands without loading models.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from studio.runfolder.layout import ACCELERATE_CONFIG_FILE

# Set by torchrun (and so by `accelerate launch`) in every process it starts.
_LAUNCHED_ENV = ("LOCAL_RANK", "WORLD_SIZE")


def world_size(d) -> int:
    """Processes across all machines: `num_processes` is per machine."""
    return d.num_processes * d.num_machines


def is_multi_process(cfg) -> bool:
    return world_size(cfg.distributed) > 1


def inside_launcher() -> bool:
    """True in a process started by accelerate/torchrun (then the job must not launch again)."""
    return all(k in os.environ for k in _LAUNCHED_ENV)


def accelerate_config(cfg) -> dict:
    """The accelerate config (the JSON form of `accelerate config`'s file) for this job."""
    d = cfg.distributed
    on_cpu = cfg.model.device == "cpu"
    base = {
        "compute_environment": "LOCAL_MACHINE",
        "num_processes": world_size(d),
        "num_machines": d.num_machines,
        "machine_rank": d.machine_rank,
        "main_process_port": d.main_process_port,
        "rdzv_backend": "static",
        "same_network": d.num_machines == 1,
        # The trainer passes its own mixed precision to Accelerator(), which wins over this value.
        "mixed_precision": "no",
        "use_cpu": False,
        "gpu_ids": d.gpu_ids or "all",
    }
    if d.num_machines > 1:
        base["main_process_ip"] = d.main_process_ip
    # accelerate's `--cpu` path starts one process unless mpirun is installed; its GPU launcher
    # (torchrun) starts N processes that each pick gloo when the trainer asks for the CPU.
    if d.strategy == "fsdp2":
        base["distributed_type"] = "FSDP"
        base["fsdp_config"] = {
            "fsdp_version": 2,
            # One shard unit per block (the model's own `_no_split_modules`): frozen base and trainable
            # adapter weights of a block gather together, so LoRA and full fine-tunes both work.
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True,
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_cpu_ram_efficient_loading": False,
            "fsdp_offload_params": d.offload != "none",
            "fsdp_activation_checkpointing": False,  # the family's own gradient checkpointing is used
        }
    elif d.strategy == "deepspeed":
        base["distributed_type"] = "DEEPSPEED"
        base["deepspeed_config"] = {
            "zero_stage": d.deepspeed_zero_stage,
            "offload_optimizer_device": "cpu" if d.offload != "none" else "none",
            "offload_param_device": "cpu" if d.offload == "optimizer_and_params" else "none",
            "gradient_accumulation_steps": cfg.training.gradient_accumulation_steps,
            "gradient_clipping": cfg.training.max_grad_norm if cfg.training.max_grad_norm > 0 else 1.0,
            "zero3_init_flag": False,
        }
    else:
        base["distributed_type"] = "MULTI_GPU"
    if on_cpu:
        base["gpu_ids"] = "all"
    return base


def write_accelerate_config(cfg, run_dir: Path) -> Path:
    from studio.runfolder.atomic import atomic_write_text

    path = Path(run_dir) / ACCELERATE_CONFIG_FILE
    atomic_write_text(path, json.dumps(accelerate_config(cfg), indent=2, sort_keys=True))
    return path


def pin_gpus(cfg) -> None:
    """One process with `distributed.gpu_ids`: show it only those GPUs (set before CUDA starts)."""
    ids = ",".join(p.strip() for p in cfg.distributed.gpu_ids.split(",") if p.strip())
    if ids and cfg.model.device != "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ids


def launch_argv(kind: str, config_path: Path, accelerate_file: Path, extra_args: str = "",
                python: str = sys.executable) -> list[str]:
    """The command that starts this machine's processes."""
    argv = [python, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_file)]
    argv += shlex.split(extra_args)
    return argv + ["-m", "studio", kind, str(config_path)]


def machine_commands(cfg, config_path: Path, python: str = "python") -> list[str]:
    """One shell line per machine (rank 0 first), for the CLI and the Train tab to show. Each machine
    runs the studio with its own rank; the studio then starts `accelerate launch` there."""
    lines = []
    for rank in range(cfg.distributed.num_machines):
        argv = [python, "-m", "studio", "train", str(config_path)]
        if cfg.distributed.num_machines > 1:
            argv += ["--set", f"distributed.machine_rank={rank}"]
        lines.append(shlex.join(argv))
    return lines


def launch(cfg, config_path: Path, run_dir: Path) -> int:
    """Start this machine's processes with accelerate's launcher and wait for them; returns the
    exit code (non-zero when any rank failed: torchrun ends the others)."""
    import subprocess

    accelerate_file = write_accelerate_config(cfg, run_dir)
    argv = launch_argv("train", config_path, accelerate_file, cfg.distributed.accelerate_extra_args)
    print(f"launching {world_size(cfg.distributed)} processes: {shlex.join(argv)}", flush=True)
    if cfg.distributed.num_machines > 1:
        print("run on each machine (same data and model paths):\n  " + "\n  ".join(
            f"machine {r}: {line}" for r, line in enumerate(machine_commands(cfg, config_path))), flush=True)
    return subprocess.call(argv)
