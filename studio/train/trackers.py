"""The metric trackers of `logging.report_to`, built from accelerate's tracker classes (FIELDS G05).

The main process alone gets trackers (accelerate's `init_trackers` and `log` run there only), so a
metric is recorded once however many processes train. TensorBoard keeps the folder it always had:
`logging.log_dir` or `RUN_DIR/runs`, with `job.run_name` as a sub-folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from studio.config.sections.outputs import DEFAULT_PROJECT
from studio.runfolder.layout import COMET_DIR, MLFLOW_DIR, TENSORBOARD_DIR

log = logging.getLogger("studio.train")


def tensorboard_dir(cfg, run_dir: Path) -> Path:
    base = Path(cfg.logging.log_dir).expanduser() if cfg.logging.log_dir else Path(run_dir) / TENSORBOARD_DIR
    return base / cfg.job.run_name if cfg.job.run_name else base


def build_trackers(cfg, run_dir: Path) -> list:
    """accelerate `GeneralTracker`s for `Accelerator(log_with=...)`, in the order of `report_to`."""
    from accelerate import tracking

    lg, run_dir = cfg.logging, Path(run_dir)
    project = lg.tracker_project or DEFAULT_PROJECT
    run_name = cfg.job.run_name or cfg.job.name or None
    out = []
    for name in lg.report_to:
        if name == "tensorboard":
            folder = tensorboard_dir(cfg, run_dir)  # accelerate joins (folder, run name): run name "" keeps it
            out.append(tracking.TensorBoardTracker("", str(folder)))
        elif name == "wandb":
            out.append(tracking.WandBTracker(project, name=run_name, entity=lg.wandb_entity or None,
                                             mode="offline" if lg.trackers_offline else "online", dir=str(run_dir)))
        elif name == "mlflow":
            out.append(tracking.MLflowTracker(experiment_name=project, run_name=run_name))
        elif name == "comet_ml":
            import comet_ml

            settings = comet_ml.ExperimentConfig(name=run_name, offline_directory=str(run_dir / COMET_DIR))
            out.append(tracking.CometMLTracker(project, online=not lg.trackers_offline, experiment_config=settings))
    return out


def start_trackers(accelerator, cfg, run_dir: Path) -> None:
    """Start the trackers given to the Accelerator (main process only) and record the job's settings in
    those that keep hyperparameters (TensorBoard keeps its events only, as before)."""
    if not accelerator.is_main_process or not accelerator.log_with:
        return
    if "mlflow" in cfg.logging.report_to:
        import os

        import mlflow

        uri = (cfg.logging.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
               or (Path(run_dir) / MLFLOW_DIR).resolve().as_uri())
        if uri.startswith("file:"):  # MLflow 3 keeps its folder store but asks to opt in to it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
    try:
        accelerator.init_trackers(cfg.logging.tracker_project or DEFAULT_PROJECT)
    except Exception as err:  # noqa: BLE001 - each tracker library raises its own (wandb's UsageError, ...)
        finish_trackers(accelerator)
        keys = [key for name, key in (("wandb", "WANDB_API_KEY"), ("comet_ml", "COMET_API_KEY"))
                if name in cfg.logging.report_to]
        hint = (f"; set {' / '.join(keys)} (e.g. in job.env_file) or turn on logging.trackers_offline"
                if keys and not cfg.logging.trackers_offline else "")
        raise RuntimeError(f"logging.report_to: a tracker could not start ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200]}){hint}") from None
    params = flat_settings(cfg.model_dump(mode="json"))
    for tracker in accelerator.trackers:
        if tracker.name != "tensorboard":
            tracker.store_init_configuration(params)


def finish_trackers(accelerator) -> None:
    """Close every tracker (W&B and Comet write their last records here); a tracker that fails to close
    is a warning, never the run's error."""
    for tracker in accelerator.trackers:
        try:
            tracker.finish()
        except Exception as err:  # noqa: BLE001 - e.g. one that failed to start
            log.warning("the %s tracker did not close cleanly: %s", tracker.name, err)
    accelerator.trackers.clear()


def flat_settings(config: dict) -> dict:
    """`{"training": {"seed": 1}}` -> `{"training.seed": 1}`; lists as JSON text (MLflow takes scalars)."""
    out = {}
    for section, values in config.items():
        for key, value in (values.items() if isinstance(values, dict) else [("", values)]):
            name = f"{section}.{key}" if key else section
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out
