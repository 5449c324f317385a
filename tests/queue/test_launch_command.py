"""The `distributed` section decides how the queue launches a job (accelerate's own flags), and
`job.run_name` is shown beside the job's name in the queue."""
from __future__ import annotations

import sys
from pathlib import Path

from studio.queue.commands import accelerate_args, job_command

CONFIG = Path("/runs/a/config.json")


def test_one_process_without_gpu_ids_is_a_plain_python_process():
    assert job_command("train", CONFIG, {"num_processes": 1}) == [sys.executable, "-m", "studio", "train", str(CONFIG)]
    assert job_command("train", CONFIG, None) == job_command("train", CONFIG, {})


def test_strategy_stage_gpu_ids_and_extra_args_reach_accelerate_launch():
    ddp = accelerate_args({"num_processes": 2, "strategy": "ddp", "gpu_ids": "0, 1"})
    assert ddp == ["-m", "accelerate.commands.launch", "--num_processes", "2", "--gpu_ids", "0,1"]
    assert "--use_fsdp" in accelerate_args({"num_processes": 2, "strategy": "fsdp"})
    ds = accelerate_args({"num_processes": 4, "strategy": "deepspeed", "deepspeed_zero_stage": 3,
                          "accelerate_extra_args": "--main_process_port 29501"})
    assert ds[-5:] == ["--use_deepspeed", "--zero_stage", "3", "--main_process_port", "29501"]
    argv = job_command("train", CONFIG, {"num_processes": 2, "strategy": "ddp"}, python="py")
    assert argv[:3] == ["py", "-m", "accelerate.commands.launch"] and argv[-4:] == ["-m", "studio", "train", str(CONFIG)]


def test_gpu_ids_alone_pin_a_single_process_to_that_gpu():
    assert accelerate_args({"num_processes": 1, "gpu_ids": "3"}) == [
        "-m", "accelerate.commands.launch", "--num_processes", "1", "--gpu_ids", "3"]


def test_run_name_is_shown_in_the_queue_list(studio_home):
    from studio.queue import JobStore
    from studio.queue.cli import _list_rows

    store = JobStore()
    job = store.add({"model": {"family": "sd15", "path": "tiny:sd15"}, "job": {"name": "a", "run_name": "v2 ink"}})
    plain = store.add({"model": {"family": "sd15", "path": "tiny:sd15"}, "job": {"name": "b"}})
    assert store.get(job.id).label == "a (v2 ink)" and store.get(plain.id).label == "b"
    assert "a (v2 ink)" in _list_rows(store.list())
