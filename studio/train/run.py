"""`python -m studio train`: prepare the run folder, train, export, and report every ending in
progress.jsonl (done / stopped / error) so the queue and the UI never have to guess."""
from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from studio.config import ConfigError
from studio.config.loader import load_job
from studio.config.outdir import archive_old_run
from studio.train import disk, health
from studio.train.console import capture_console, log_to_stdout

log = logging.getLogger("studio.train")


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_training_args(run_dir: Path, cfg, trainer) -> None:
    ds = trainer.train_loader.dataset
    fingerprint = ds.fingerprint() if hasattr(ds, "fingerprint") else None
    record = {"config": cfg.model_dump(mode="json"), "versions": library_versions(), "seed": cfg.training.seed,
              "dataset_fingerprint": fingerprint, "dataset_items": len(ds), "total_steps": trainer.total_steps,
              "dataset_cache": ds.cache_summary() if hasattr(ds, "cache_summary") else None,
              "notes": trainer.notes, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = run_dir / "training_args.json.tmp"
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(tmp, run_dir / "training_args.json")


def train_from_cli(config_path: str, overrides: list[str], progress_bar: bool = True) -> int:
    cfg = load_job(config_path, overrides)  # every check that needs no model, before the run folder exists
    from studio.data.precheck import data_problems

    problems = data_problems(cfg)
    if problems:
        raise ConfigError(problems)
    run_dir = Path(cfg.job.output_dir).expanduser().resolve()
    try:
        disk.require_space(run_dir, 0, "the run")
    except disk.DiskFull as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if cfg.job.overwrite and (archived := archive_old_run(run_dir)):
        log.warning("job.overwrite: the earlier run in %s moved to %s", run_dir, archived)
    run_dir.mkdir(parents=True, exist_ok=True)
    with capture_console(run_dir / "console.log"), log_to_stdout(cfg.logging.log_level):
        for note in cfg.notes:
            log.warning("config: %s", note)
        return run_training(cfg, run_dir, progress_bar=progress_bar and sys.stderr.isatty())


def run_training(cfg, run_dir: Path, progress_bar: bool = False) -> int:
    from studio.train.progress import ProgressLog

    progress = ProgressLog(run_dir, total_steps=0)
    try:
        outcome, final_loss, step = _train(cfg, run_dir, progress, progress_bar)
    except KeyboardInterrupt:
        progress.event("stopped", message="interrupted from the keyboard")
        return 130
    except Exception as err:  # noqa: BLE001 - every failure must end with an error event
        message = describe_failure(err, run_dir)
        log.error("training failed: %s", message, exc_info=not isinstance(err, (ConfigError, ValueError, OSError)
                                                                           + health.EXPECTED))
        progress.event("error", message=message, type=type(err).__name__)
        return 1
    finally:
        progress.close()
    return 0


def describe_failure(err: Exception, run_dir: Path | None = None) -> str:
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return ("out of GPU memory: lower training.batch_size (and raise gradient accumulation), enable "
                "memory.gradient_checkpointing, or use a lighter optimizer (adafactor / adamw8bit). The last "
                "checkpoint is intact.")
    if isinstance(err, disk.DiskFull):
        return str(err)
    if disk.is_disk_full(err):
        return disk.full_message(run_dir) if run_dir is not None else f"the disk is full ({err.filename})"
    return str(err) or type(err).__name__


def _train(cfg, run_dir: Path, progress, progress_bar: bool):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from studio.data.preflight import is_image_job, scan_image_job
    from studio.train import checkpoint as ckpt
    from studio.train.loop import Loop
    from studio.train.setup import build_trainer, mixed_precision

    if is_image_job(cfg):  # name every unusable file (and refuse with on_bad_file=error) before loading
        scan_image_job(cfg, progress)
    set_seed(cfg.training.seed)
    accelerator = Accelerator(mixed_precision=mixed_precision(cfg), cpu=cfg.model.device == "cpu")
    progress.event("loading", message=f"loading {cfg.model.family} model from {cfg.model.path}")
    trainer = build_trainer(cfg, accelerator)
    progress.total = trainer.total_steps
    ckpt.clean_incomplete(run_dir)
    disk.require_space(run_dir, 2 * disk.tensor_bytes(trainer.adapter.trainable_params()), "the first checkpoint")
    write_training_args(run_dir, cfg, trainer)
    writer = _tensorboard(cfg, run_dir)
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=trainer.total_steps, desc=cfg.job.name, unit="step", dynamic_ncols=True)
    loop = Loop(trainer, run_dir, progress, writer=writer, bar=bar)
    resume = health.resume_point(run_dir, cfg.checkpointing.resume_from, cfg.checkpointing.auto_resume)
    if resume:
        loop.resume(resume)
        if bar is not None:
            bar.update(loop.step)
    progress.event("start", step=loop.step, total=trainer.total_steps, epochs=trainer.epochs,
                   items=len(trainer.train_loader.dataset))
    outcome = loop.run()
    if outcome == "done":
        finish(loop, run_dir)
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    return outcome, loop.last_loss, loop.step


def finish(loop, run_dir: Path) -> None:
    """Final samples and adapter (EMA weights when enabled), optional hub upload, then `done`."""
    from studio.train.checkpoint import MANIFEST

    t, cfg = loop.t, loop.cfg
    loop._check_finite()
    if cfg.checkpointing.save_strategy != "no" and not (run_dir / f"checkpoint-{loop.step}" / MANIFEST).is_file():
        loop.save("final")  # resumable at its last step: "train longer" continues from here, not an older one
    if cfg.sampling.at_end:
        loop.render_samples()
    params = t.adapter.trainable_params()
    if t.ema is not None:
        t.ema.copy_to(params)
    from studio.adapters.export import finish_exports

    # adapter_model.safetensors, the kohya file, merged/ when asked; each loaded back and checked
    finish_exports(t.adapter, run_dir, step=loop.step, progress=loop.progress)
    if cfg.hub.push_to_hub:
        from studio.hub import push_run

        push_run(run_dir, cfg, loop.progress)
    loop.progress.event("done", step=loop.step, final_loss=loop.last_loss, output_dir=str(run_dir))
    log.info("done: %d steps, final loss %.4f, adapter in %s", loop.step, loop.last_loss, run_dir)


def _tensorboard(cfg, run_dir: Path):
    if not cfg.logging.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=cfg.logging.log_dir or str(run_dir / "runs"))
