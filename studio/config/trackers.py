"""The metric trackers `logging.report_to` can send to (FIELDS G05): accelerate's tracker classes, each
with the module it imports and the package a user installs for it. No tracker is imported here: the
schema builds its choice list from these names and checks the modules can be found; the trainer
(studio/train/trackers.py) builds accelerate's trackers.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class TrackerSpec:
    module: str  # what accelerate's tracker imports
    package: str  # what `pip install` needs


TRACKERS: dict[str, TrackerSpec] = {
    "tensorboard": TrackerSpec("tensorboard", "tensorboard"),  # in requirements.txt
    "wandb": TrackerSpec("wandb", "wandb"),
    # mlflow-skinny: the tracking client without the server's heavy dependencies.
    "mlflow": TrackerSpec("mlflow", "mlflow-skinny"),
    "comet_ml": TrackerSpec("comet_ml", "comet-ml"),
}


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(TRACKERS[name].module) is not None
    except (ImportError, ValueError):  # a module that is half there
        return False


def missing_trackers(names: list[str]) -> list[str]:
    """A message per chosen tracker whose package is not installed, naming what to install."""
    return [f"'{name}' needs the `{TRACKERS[name].package}` package: pip install {TRACKERS[name].package}"
            for name in names if not installed(name)]
