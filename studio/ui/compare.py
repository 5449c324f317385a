"""Runs side by side: the loss (and eval loss) curves of several runs on one chart, and the sweep builder
that turns one config into a grid of jobs (learning rate x rank x steps)."""
from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pandas as pd

from studio.config import ConfigError, load_config
from studio.runfolder import read_progress

# The sweep's axes: config path -> (label in job names, parse one value)
SWEEP_AXES = {"training.learning_rate": ("lr", float), "adapter.rank": ("r", int), "training.max_steps": ("s", int)}
MAX_SWEEP_JOBS = 64


def run_curves(label: str, run_dir: str | Path) -> list[tuple[int, float, str]]:
    """(step, loss, series) rows of one run: its logged training loss and its eval losses."""
    records, _ = read_progress(Path(run_dir))
    rows = []
    for rec in records:
        if "event" not in rec and isinstance(rec.get("loss"), (int, float)):
            rows.append((int(rec["step"]), float(rec["loss"]), label))
        elif rec.get("event") == "eval" and isinstance(rec.get("loss", rec.get("eval_loss")), (int, float)):
            rows.append((int(rec.get("step", 0)), float(rec.get("loss", rec.get("eval_loss"))), f"{label} (eval)"))
    return rows


def overlay_frame(jobs) -> pd.DataFrame:
    """One frame for a LinePlot coloured by run: every step record of each job's progress.jsonl."""
    rows = [row for job in jobs for row in run_curves(f"#{job.id} {job.name}", job.run_dir)]
    return pd.DataFrame(rows, columns=["step", "loss", "run"])


def parse_axis(path: str, text: str) -> list:
    """'1e-4, 5e-4' -> [0.0001, 0.0005]; empty -> [] (the base config's value is kept)."""
    _, cast = SWEEP_AXES[path]
    values = []
    for part in (p.strip() for p in (text or "").replace(";", ",").split(",")):
        if not part:
            continue
        try:
            values.append(cast(float(part)) if cast is int and float(part).is_integer() else cast(part))
        except ValueError:
            kind = "whole numbers" if cast is int else "numbers"
            raise ConfigError([(path, f"sweep value {part!r}: give {kind} separated by commas")]) from None
    return values


def sweep_configs(base: dict, grid: dict[str, list], prefix: str) -> list[tuple[str, dict]]:
    """(job name, validated config) for every combination of the grid's values; each config is the base
    with those values set. Raises ConfigError naming the setting of a bad combination."""
    axes = [(path, values) for path, values in grid.items() if values]
    if not axes:
        raise ConfigError([("sweep", "give at least one value for learning rate, rank or steps")])
    count = 1
    for _, values in axes:
        count *= len(values)
    if count > MAX_SWEEP_JOBS:
        raise ConfigError([("sweep", f"{count} combinations: at most {MAX_SWEEP_JOBS} jobs per sweep")])
    out = []
    for combo in itertools.product(*[values for _, values in axes]):
        config = copy.deepcopy(base)
        parts = []
        for (path, _), value in zip(axes, combo):
            section, key = path.split(".")
            config.setdefault(section, {})[key] = value
            parts.append(f"{SWEEP_AXES[path][0]}{value:g}" if isinstance(value, float) else f"{SWEEP_AXES[path][0]}{value}")
        config["job"] = {**config.get("job", {}), "name": "", "output_dir": ""}
        load_config(config)  # a bad value is named before any job is queued
        out.append((f"{prefix}-{'-'.join(parts)}", config))
    return out
