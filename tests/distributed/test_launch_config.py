"""distributed.*: the accelerate config a job launches with, and the combinations refused up front."""
from __future__ import annotations

import shlex

import pytest

from studio import distributed
from studio.config import ConfigError, load_config
from studio.config.presets import load_preset_data


def _cfg(*overrides: str):
    return load_config(load_preset_data("tiny-sd15-lora"), list(overrides))


def _fields(err: ConfigError) -> dict[str, str]:
    return dict(err.problems)


def test_ddp_config_is_one_accelerate_reads_back(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = _cfg("distributed.num_processes=2", "distributed.gpu_ids=0,1", "distributed.main_process_port=29611")
    path = distributed.write_accelerate_config(cfg, tmp_path)
    loaded = ClusterConfig.from_json_file(json_file=str(path))
    assert loaded.distributed_type.value == "MULTI_GPU" and loaded.num_processes == 2
    assert loaded.gpu_ids == "0,1" and loaded.main_process_port == 29611 and loaded.num_machines == 1


def test_fsdp2_and_deepspeed_become_accelerate_plugins():
    # (both are refused at validation until the trainer gathers sharded weights; the config is ready)
    cfg = _cfg("distributed.num_processes=4")
    cfg.distributed.strategy, cfg.distributed.offload = "fsdp2", "optimizer_and_params"
    fsdp = distributed.accelerate_config(cfg)
    assert fsdp["distributed_type"] == "FSDP"
    assert fsdp["fsdp_config"]["fsdp_version"] == 2 and fsdp["fsdp_config"]["fsdp_offload_params"] is True
    cfg = _cfg("distributed.num_processes=2", "training.gradient_accumulation_steps=3")
    cfg.distributed.strategy, cfg.distributed.deepspeed_zero_stage = "deepspeed", 3  # (deepspeed not installed here)
    cfg.distributed.offload = "optimizer"
    ds = distributed.accelerate_config(cfg)
    assert ds["distributed_type"] == "DEEPSPEED"
    assert ds["deepspeed_config"] == {**ds["deepspeed_config"], "zero_stage": 3, "gradient_accumulation_steps": 3,
                                      "offload_optimizer_device": "cpu", "offload_param_device": "none"}


def test_two_machines_total_processes_and_one_command_per_machine(tmp_path):
    cfg = _cfg("distributed.num_processes=8", "distributed.num_machines=2", "distributed.main_process_ip=10.0.0.5")
    acc = distributed.accelerate_config(cfg)
    assert acc["num_processes"] == 16 and acc["num_machines"] == 2 and acc["main_process_ip"] == "10.0.0.5"
    lines = distributed.machine_commands(cfg, tmp_path / "config.json")
    assert len(lines) == 2
    assert shlex.split(lines[1])[-2:] == ["--set", "distributed.machine_rank=1"]


@pytest.mark.parametrize("overrides, field, words", [
    (["distributed.num_machines=2"], "distributed.main_process_ip", "rank 0"),
    (["distributed.num_machines=2", "distributed.main_process_ip=h", "distributed.machine_rank=2"],
     "distributed.machine_rank", "below num_machines"),
    (["distributed.num_processes=2", "distributed.strategy=deepspeed"], "distributed.strategy", "pip install deepspeed"),
    (["distributed.num_processes=2", "distributed.strategy=fsdp2"], "distributed.strategy", "not supported by the trainer"),
    (["distributed.num_processes=2", "distributed.offload=optimizer"], "distributed.offload", "fsdp2 or deepspeed"),
    (["distributed.num_processes=2", "distributed.strategy=fsdp2", "adapter.type=loha", "adapter.backend=lycoris"],
     "distributed.strategy", "LyCORIS"),
    (["distributed.num_processes=2", "distributed.gpu_ids=0,x"], "distributed.gpu_ids", "integers"),
    (["distributed.num_processes=3", "distributed.gpu_ids=0,1"], "distributed.gpu_ids", "must match"),
    (["distributed.accelerate_extra_args=--foo 'bar"], "distributed.accelerate_extra_args", "cannot be split"),
    (["distributed.strategy=fsdp"], "distributed.strategy", "fsdp2"),
])
def test_combinations_that_cannot_work_are_refused_with_the_reason(overrides, field, words):
    with pytest.raises(ConfigError) as err:
        _cfg(*overrides)
    problems = _fields(err.value)
    assert field in problems, problems
    assert words in problems[field]


def test_a_launched_rank_does_not_launch_again(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not distributed.inside_launcher()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.inside_launcher()
