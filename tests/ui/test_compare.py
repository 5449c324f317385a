"""Runs side by side: the overlay reads each run's losses; the sweep turns one preset into a grid of jobs."""
from __future__ import annotations

import json

import pytest

from studio.config import ConfigError
from studio.queue import JobStore
from studio.ui.compare import overlay_frame, parse_axis, sweep_configs
from studio.ui.train_actions import preset_config


def test_a_2x2_sweep_queues_four_valid_jobs(studio_home):
    base = preset_config("tiny-sd15-lora")
    grid = {"training.learning_rate": parse_axis("training.learning_rate", "1e-4, 5e-4"),
            "adapter.rank": parse_axis("adapter.rank", "4,8"), "training.max_steps": parse_axis("training.max_steps", "")}
    configs = sweep_configs(base, grid, "grid")
    assert [n for n, _ in configs] == ["grid-lr0.0001-r4", "grid-lr0.0001-r8", "grid-lr0.0005-r4", "grid-lr0.0005-r8"]
    store = JobStore(studio_home / "queue.db")
    jobs = [store.add(c, name=n) for n, c in configs]
    assert {(j.config["training"]["learning_rate"], j.config["adapter"]["rank"]) for j in jobs} == \
        {(1e-4, 4), (1e-4, 8), (5e-4, 4), (5e-4, 8)}
    assert len({j.run_dir for j in jobs}) == 4 and all(j.config["training"]["max_steps"] == 20 for j in jobs)


def test_bad_sweep_values_name_the_setting():
    with pytest.raises(ConfigError, match="adapter.rank.*'four'"):
        parse_axis("adapter.rank", "4, four")
    with pytest.raises(ConfigError, match="adapter.rank"):
        sweep_configs(preset_config("tiny-sd15-lora"), {"adapter.rank": [0]}, "bad")
    with pytest.raises(ConfigError, match="at most 64"):
        sweep_configs(preset_config("tiny-sd15-lora"), {"training.learning_rate": [1e-4] * 9,
                                                         "adapter.rank": list(range(1, 9))}, "big")


def test_overlay_has_one_series_per_run_and_eval(tmp_path):
    class Job:
        def __init__(self, i, name):
            self.id, self.name, self.run_dir = i, name, tmp_path / name
            self.run_dir.mkdir()

    a, b = Job(1, "a"), Job(2, "b")
    (a.run_dir / "progress.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 1, "loss": 0.9}, {"step": 2, "total": 4}, {"event": "eval", "step": 2, "loss": 0.8}]) + "\n")
    (b.run_dir / "progress.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    frame = overlay_frame([a, b])
    assert sorted(set(frame["run"])) == ["#1 a", "#1 a (eval)", "#2 b"]
    assert len(frame) == 3  # the per-step tick without a loss is no point
