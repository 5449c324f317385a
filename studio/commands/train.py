"""`python -m studio train`: prepare the run folder, train, export, and report every ending in
progress.jsonl (done / stopped / error) so the queue and the UI never have to guess."""
from __future__ import annotations

import json
import logging
import platform
import sys
import time
from pathlib import Path

from studio.config import ConfigError
from studio.config.loader import load_job
from studio.runfolder.atomic import atomic_write_text
from studio.runfolder.console import capture_console, log_to_stdout
from studio.runfolder.events import Event
from studio.runfolder.layout import TRAINING_ARGS_FILE, archive_old_run, checkpoint_path, console_path, is_complete
from studio.train import disk, health

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
    from studio.train.job_env import job_environment

    ds = trainer.train_loader.dataset
    record = {"config": cfg.model_dump(mode="json"), "versions": library_versions(), "seed": cfg.training.seed,
              "dataset_fingerprint": ds.fingerprint(), "dataset_items": len(ds), "total_steps": trainer.total_steps,
              "dataset_cache": ds.cache_summary(),
              "notes": trainer.notes, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "environment": sorted(job_environment(cfg))}  # names only: values may be secrets
    atomic_write_text(run_dir / TRAINING_ARGS_FILE, json.dumps(record, indent=2))


def train_from_cli(config_path: str, overrides: list[str], progress_bar: bool = True) -> int:
    from studio import distributed
    from studio.adapters.peft_file import with_peft_config_file
    from studio.data.precheck import data_problems
    from studio.runfolder.device import check_device
    from studio.train.job_env import apply_job_environment

    launched_rank = distributed.inside_launcher()  # the launcher's parent already checked and archived
    cfg = with_peft_config_file(load_job(config_path, overrides))  # every check that needs no model
    check_device(cfg)  # a device that is not there: a config error (exit 2) before the run folder exists
    problems = [] if launched_rank else data_problems(cfg)
    if problems:
        raise ConfigError(problems)
    apply_job_environment(cfg)  # before any Hugging Face library is imported; a bad env file: exit 2
    if not launched_rank:
        cfg = plan_memory(cfg)
    run_dir = Path(cfg.job.output_dir).expanduser().resolve()
    try:
        disk.require_space(run_dir, 0, "the run")
    except disk.DiskFull as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if cfg.job.overwrite and not launched_rank and (archived := archive_old_run(run_dir)):
        log.warning("job.overwrite: the earlier run in %s moved to %s", run_dir, archived)
    run_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_multi_process(cfg) and not launched_rank:
        # This process only starts the ranks (through accelerate) with the resolved config; the ranks
        # continue this run folder (its old run was archived above, if asked).
        from studio.runfolder.layout import write_config

        if cfg.model.path.startswith("tiny:"):  # written once here, not by every rank at the same time
            from studio.families.paths import resolve_model_path

            resolve_model_path(cfg.model.path)
        ranks_cfg = cfg.model_copy(deep=True)
        ranks_cfg.job.overwrite = False
        resolved = write_config(run_dir, ranks_cfg.model_dump(mode="json"))
        return distributed.launch(cfg, resolved, run_dir)
    distributed.pin_gpus(cfg)  # one process on chosen GPUs
    from studio.train.ranks import is_main_process

    if not is_main_process():  # another rank: its output reaches the launcher's console; warnings only
        with log_to_stdout("warning"):
            return run_training(cfg, run_dir)
    with capture_console(console_path(run_dir)), log_to_stdout(cfg.logging.log_level):
        for note in cfg.notes:
            log.warning("config: %s", note)
        return run_training(cfg, run_dir, progress_bar=progress_bar and sys.stderr.isatty())


def plan_memory(cfg):
    """Decide `memory.gradient_checkpointing=auto` from the memory estimate and note the estimate and the
    decision (printed at start, recorded in training_args.json). The fit check itself ran in `load_job`."""
    from studio.config.model_shapes import model_for
    from studio.config.vram import estimate_vram, gpu_text
    from studio.config.vram_fit import checkpointing_for, fit_problems, gpu_memory
    from studio.families.paths import resolve_model_path

    folder = resolve_model_path(cfg.model.path) if cfg.model.path.startswith("tiny:") else None
    out = cfg.model_copy(deep=True)
    on, why = checkpointing_for(cfg, folder, hub=True)
    if cfg.memory.gradient_checkpointing == "auto":
        out.memory.gradient_checkpointing = on
        out.notes.append(why)
    model = model_for(cfg, folder, hub=True)
    if model is not None:
        gpu, name = gpu_memory(cfg)
        est = estimate_vram(out, model, gpu_bytes=gpu, gpu_name=name)
        card = f" of the GPU's {gpu_text(gpu)}" if gpu else ""
        out.notes.append(f"memory estimate: about {est.total / 2**30:.1f} GiB{card} (weights "
                         f"{est.parts['weights'] / 2**30:.1f}, adapter + optimizer {est.parts['trainable'] / 2**30:.1f}, "
                         f"activations {est.parts['activations'] / 2**30:.1f}); `python -m studio vram` shows the breakdown")
    problems, warnings = fit_problems(out, folder, hub=True)
    if problems:  # a `tiny:` model is only readable once written, after load_job's own check
        raise ConfigError(problems)
    out.notes.extend(warnings)
    return out


def run_training(cfg, run_dir: Path, progress_bar: bool = False) -> int:
    from studio.runfolder.progress import ProgressLog
    from studio.train.ranks import is_main_process

    progress = ProgressLog(run_dir, total_steps=0, write=is_main_process())
    try:
        outcome, final_loss, step = _train(cfg, run_dir, progress, progress_bar)
    except KeyboardInterrupt:
        progress.event(Event.STOPPED, message="interrupted from the keyboard")
        return 130
    except Exception as err:  # noqa: BLE001 - every failure must end with an error event
        message = describe_failure(err, run_dir)
        log.error("training failed: %s", message, exc_info=not isinstance(err, (ConfigError, ValueError, OSError)
                                                                           + health.EXPECTED))
        progress.event(Event.ERROR, message=message, type=type(err).__name__)
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
    from studio.train.job_env import apply_job_environment

    apply_job_environment(cfg)  # again for jobs run inside another process (the studio, tests)
    from accelerate.utils import set_seed

    from studio.data.preflight import is_image_job, scan_image_job
    from studio.train import checkpoint as ckpt
    from studio.hub import CheckpointPusher
    from studio.train.loop import Loop
    from studio.train.setup import build_trainer
    from studio.train.trackers import finish_trackers, start_trackers

    if is_image_job(cfg):  # name every unusable file (and refuse with on_bad_file=error) before loading
        scan_image_job(cfg, progress)
    set_seed(cfg.training.seed)  # the same on every rank: identical adapter init and noise streams
    accelerator = _accelerator(cfg, run_dir)
    main = accelerator.is_main_process
    # Trackers start before the model loads: one that cannot (W&B online without an API key) ends the job
    # in seconds, naming logging.report_to, instead of after minutes of loading.
    start_trackers(accelerator, cfg, run_dir)  # logging.report_to, main process only
    try:
        progress.event(Event.LOADING, message=f"loading {cfg.model.family} model from {cfg.model.path}")
        trainer = build_trainer(cfg, accelerator)
    except BaseException:
        finish_trackers(accelerator)
        raise
    progress.total = trainer.total_steps
    if main:
        ckpt.clean_incomplete(run_dir)
        disk.require_space(run_dir, 2 * disk.tensor_bytes(trainer.adapter.trainable_params()), "the first checkpoint")
        write_training_args(run_dir, cfg, trainer)
    accelerator.wait_for_everyone()
    bar = None
    if progress_bar and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=trainer.total_steps, desc=cfg.job.name, unit="step", dynamic_ncols=True)
    pusher = CheckpointPusher(cfg, progress) if main and CheckpointPusher.wanted(cfg) else None
    loop = Loop(trainer, run_dir, progress, bar=bar, on_checkpoint=pusher and pusher.push)
    try:
        resume = health.resume_point(run_dir, cfg.checkpointing.resume_from, cfg.checkpointing.auto_resume)
        if resume:
            loop.resume(resume)
            if bar is not None:
                bar.update(loop.step)
        progress.event(Event.START, step=loop.step, total=trainer.total_steps, epochs=trainer.epochs,
                       items=len(trainer.train_loader.dataset), processes=accelerator.num_processes,
                       strategy=accelerator.distributed_type.value, **_ddp_options(trainer.loss_module))
        outcome = loop.run()
        if outcome == "done":
            finish(loop, run_dir, pusher)
    finally:
        if pusher is not None:
            pusher.close()  # idempotent: after `finish`, nothing is left to wait for
        finish_trackers(accelerator)
    if bar is not None:
        bar.close()
    return outcome, loop.last_loss, loop.step


def finish(loop, run_dir: Path, pusher=None) -> None:
    """Final samples and adapter (EMA weights when enabled), optional hub upload, then `done` (after the
    checkpoint uploads still queued, so that `done` is the run's last word)."""

    t, cfg = loop.t, loop.cfg
    loop._check_finite()
    from studio.train.ranks import shared_flags

    # Resumable at its last step: "train longer" continues from here, not from an older checkpoint.
    # The main process decides (its disk holds the run folder); every rank takes part in the save.
    missing = not is_complete(checkpoint_path(run_dir, loop.step))
    if cfg.checkpointing.save_strategy != "no" and shared_flags(t.accelerator, [loop.main and missing])[0]:
        loop.save("final")
    if cfg.sampling.at_end:
        loop.render_samples()
    from studio.train.optimizers import set_train_mode

    set_train_mode(t.optimizer, False)  # schedule-free: the exported adapter holds the averaged weights
    params = t.adapter.trainable_params()
    if t.ema is not None:
        t.ema.copy_to(params)
    if not t.accelerator.is_main_process:  # the main process exports; the others wait for it
        t.accelerator.wait_for_everyone()
        return
    from studio.adapters.export import finish_exports

    # adapter_model.safetensors, the kohya file, merged/ when asked; each loaded back and checked
    finish_exports(t.adapter, run_dir, step=loop.step, progress=loop.progress)
    if pusher is not None:
        pusher.close()
    if cfg.hub.push_to_hub:
        from studio.hub import push_run

        push_run(run_dir, cfg, loop.progress)
    loop.progress.event(Event.DONE, step=loop.step, final_loss=loop.last_loss, output_dir=str(run_dir))
    log.info("done: %d steps, final loss %.4f, adapter in %s", loop.step, loop.last_loss, run_dir)
    t.accelerator.wait_for_everyone()


def _accelerator(cfg, run_dir: Path):
    """One Accelerator per process. With several processes, a rank that waits longer than
    distributed.timeout_minutes for the others fails (the launcher then ends the job) instead of hanging.
    The main process gets the trackers of logging.report_to."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    from studio.runfolder.device import accelerator_options, mixed_precision
    from studio.train.ranks import is_main_process
    from studio.train.trackers import build_trackers

    d = cfg.distributed
    timeout = InitProcessGroupKwargs(timeout=timedelta(minutes=d.timeout_minutes))
    ddp = DistributedDataParallelKwargs(gradient_as_bucket_view=d.ddp_gradient_as_bucket_view,
                                        static_graph=d.ddp_static_graph)
    acc = Accelerator(mixed_precision=mixed_precision(cfg), kwargs_handlers=[timeout, ddp],
                      log_with=build_trackers(cfg, run_dir) if is_main_process() else None,
                      **accelerator_options(cfg))
    from studio import distributed

    if distributed.inside_launcher() and acc.num_processes != distributed.world_size(d):
        raise ValueError(f"{distributed.world_size(d)} processes were launched but accelerate joined "
                         f"{acc.num_processes} ({acc.distributed_type.value}); they would each train alone and "
                         "write the same run folder")
    wanted = {"ddp": ("MULTI_GPU", "MULTI_CPU", "NO"), "fsdp2": ("FSDP",), "deepspeed": ("DEEPSPEED",)}
    if acc.num_processes > 1 and acc.distributed_type.value not in wanted[cfg.distributed.strategy]:
        raise ValueError(f"distributed.strategy={cfg.distributed.strategy} was asked for but accelerate runs "
                         f"{acc.distributed_type.value}: never train with another strategy than the one chosen")
    return acc


def _ddp_options(module) -> dict:
    """What the DDP wrapper really runs with (distributed.ddp_*), for the start event; empty without DDP."""
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(module, DistributedDataParallel):
        return {}
    return {"ddp": {"gradient_as_bucket_view": module.gradient_as_bucket_view, "static_graph": module.static_graph}}
