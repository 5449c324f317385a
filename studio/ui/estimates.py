"""What the Train tab shows live beside the form: the job name, the effective batch size and the
estimated number of optimizer steps and checkpoints (FIELDS §21.2, §21.8, §21.30).

The item count is a quick file count (no decoding), remembered per (path, mtime); the trainer's
own count after the preflight scan may be lower when files are skipped, hence "about".
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

from studio.config.loader import default_job_name
from studio.ui.form_spec import get_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".m4a"}
# The settings the summary depends on: editing one of them refreshes it.
ESTIMATE_PATHS = ("job.name", "model.family", "data.path", "data.repeats", "data.max_samples",
                  "data.eval_split_ratio", "training.batch_size", "training.gradient_accumulation_steps",
                  "training.epochs", "training.max_steps", "distributed.num_processes",
                  "checkpointing.save_strategy", "checkpointing.save_steps", "checkpointing.save_every_n_epochs",
                  "checkpointing.max_checkpoints")
_MAX_FILES = 200_000  # a file count should never take long; beyond this it is "unknown"
_count_cache: dict[tuple[str, float], int | None] = {}


def count_items(data_path: str) -> int | None:
    """Items in a dataset folder (images or songs) or JSONL file (lines); None when unknown."""
    if not data_path.strip():
        return None
    try:
        if data_path.startswith("demo:"):
            from studio.data.demo import ensure_demo_dataset

            path = ensure_demo_dataset(data_path[5:])
        else:
            path = Path(data_path).expanduser()
        key = (str(path), path.stat().st_mtime)
    except (OSError, ValueError, KeyError):
        return None
    if key not in _count_cache:
        _count_cache[key] = _count(path)
    return _count_cache[key]


def _count(path: Path) -> int | None:
    if path.is_file():
        if path.suffix.lower() != ".jsonl":
            return None  # plain text is split into token windows: unknown before tokenizing
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    images = audio = 0
    for i, item in enumerate(path.rglob("*")):
        if i > _MAX_FILES:
            return None
        suffix = item.suffix.lower()
        images += suffix in IMAGE_SUFFIXES
        audio += suffix in AUDIO_SUFFIXES
    return max(images, audio)


@dataclass
class Estimate:
    job_name: str
    automatic_name: bool
    effective_batch: int
    items: int | None
    steps_per_epoch: int | None
    total_steps: int | None
    checkpoints: int | None
    kept_checkpoints: int | None


def estimate(config: dict) -> Estimate:
    g = lambda path, default=None: get_path(config, path, default)  # noqa: E731
    name = str(g("job.name") or "")
    family = str(g("model.family") or "model")
    batch, accum = int(g("training.batch_size") or 1), int(g("training.gradient_accumulation_steps") or 1)
    gpus = int(g("distributed.num_processes") or 1)
    effective = batch * accum * gpus
    items = count_items(str(g("data.path") or ""))
    if items is not None:
        items = items * int(g("data.repeats") or 1)
        items = min(items, int(g("data.max_samples") or 0) or items)
        items = items - int(round(items * float(g("data.eval_split_ratio") or 0.0)))
    per_epoch = None if not items else max(1, math.ceil(math.ceil(items / (batch * gpus)) / accum))
    max_steps, epochs = int(g("training.max_steps") or 0), int(g("training.epochs") or 1)
    total = max_steps if max_steps > 0 else (per_epoch * epochs if per_epoch else None)
    checkpoints = _checkpoints(config, total, per_epoch, epochs if max_steps <= 0 else None)
    kept = None if checkpoints is None else min(checkpoints, int(g("checkpointing.max_checkpoints") or 1))
    return Estimate(name or default_job_name(family), not name, effective, items, per_epoch, total,
                    checkpoints, kept)


def _checkpoints(config: dict, total: int | None, per_epoch: int | None, epochs: int | None) -> int | None:
    strategy = get_path(config, "checkpointing.save_strategy", "steps")
    if strategy == "no":
        return 0
    if strategy == "steps":
        every = int(get_path(config, "checkpointing.save_steps", 1) or 1)
        return None if total is None else total // every
    if epochs is None:  # epochs decided by max_steps
        epochs = None if not (total and per_epoch) else total // per_epoch
    every = int(get_path(config, "checkpointing.save_every_n_epochs", 1) or 1)
    return None if epochs is None else epochs // every


def summary_markdown(est: Estimate, config: dict) -> str:
    g = lambda path, default=None: get_path(config, path, default)  # noqa: E731
    name = f"`{est.job_name}`" + (" (automatic; the final name gets the time the job is added)"
                                  if est.automatic_name else "")
    batch = (f"**{est.effective_batch}** = {g('training.batch_size')} per step × "
             f"{g('training.gradient_accumulation_steps')} accumulation × {g('distributed.num_processes', 1)} GPU")
    if est.total_steps is None:
        steps = "unknown until the dataset is found (set data.path, or max steps)"
    elif int(g("training.max_steps") or 0) > 0:
        steps = f"**{est.total_steps}** (max steps)"
    else:
        steps = f"about **{est.total_steps}** = {est.steps_per_epoch} per epoch × {g('training.epochs')} epochs " \
                f"({est.items} items)"
    if est.checkpoints is None:
        ckpt = "unknown"
    elif est.checkpoints == 0:
        ckpt = "none during training (the final adapter is always saved)"
    else:
        ckpt = f"**{est.checkpoints}**, the newest {est.kept_checkpoints} kept"
    return "\n".join([f"- **Job name** {name}", f"- **Effective batch** {batch}",
                      f"- **Optimizer steps** {steps}", f"- **Checkpoints** {ckpt}", vram_markdown(config)])


# ---- GPU memory: the estimate of studio/config/vram.py, live beside the form ---------------------------
# Settings the memory estimate depends on (besides ESTIMATE_PATHS' batch size): editing one refreshes it.
VRAM_PATHS = ("model.path", "model.quantization", "model.variant", "adapter.type", "adapter.rank",
              "adapter.target_modules", "adapter.train_text_encoder", "data.resolution", "data.resolutions",
              "data.max_seq_length", "data.chunk_seconds", "data.max_duration", "data.cache_mode",
              "memory.mixed_precision", "memory.gradient_checkpointing", "memory.gpu_memory_gb",
              "memory.offload_encoder", "optimizer.name", "training.use_ema", "training.ema_device")


def _job_and_model(config: dict):
    from studio.config.errors import ConfigError
    from studio.config.loader import validate
    from studio.config.model_shapes import model_for

    try:
        cfg = validate(config)
    except ConfigError:
        return None, None
    return cfg, model_for(cfg)


def vram_markdown(config: dict) -> str:
    """The side panel's GPU-memory line: the estimate against `memory.gpu_memory_gb` (the UI does not look
    for a GPU itself: the job may run elsewhere; the job checks the GPU it finds when it starts)."""
    from studio.config.vram import GIB, estimate_vram, size_text

    cfg, model = _job_and_model(config)
    if cfg is None:
        return "- **GPU memory** unknown until the settings are valid"
    if model is None:
        why = ("the built-in tiny model is written by its first job" if cfg.model.path.startswith("tiny:") else
               "the estimate reads a local model folder (or a hub model already downloaded)")
        return f"- **GPU memory** unknown here: {why}; the job checks it when it starts"
    gpu = cfg.memory.gpu_memory_gb * GIB or None
    est = estimate_vram(cfg, model, gpu_bytes=gpu)
    p = est.parts
    card = ("" if gpu is None else f" of {cfg.memory.gpu_memory_gb:g} GB: "
            + ("**fits**" if est.fits else "**does not fit** (pick the card below and *Fit to this GPU*)"))
    auto = " (auto)" if cfg.memory.gradient_checkpointing == "auto" else ""
    return (f"- **GPU memory** about **{size_text(est.total)}**{card}; weights {size_text(p['weights'])}, adapter "
            f"+ optimizer {size_text(p['trainable'])}, activations {size_text(p['activations'])}, encoders "
            f"{size_text(p['encoders'])}; checkpointing {'on' if est.gradient_checkpointing else 'off'}{auto}\n"
            f"- **Time per step** roughly {est.step_seconds:.2g} s on an unnamed GPU (a guess from FLOPs)")


def fit_to_gpu(config: dict, gpu_gb: float) -> tuple[dict | None, str]:
    """The VRAM picker: `config` with the settings that fit a card of `gpu_gb` GB merged in, and a message
    listing them; (None, reason) when there is no estimate."""
    from studio.config.vram import size_text
    from studio.config.vram_fit import propose_for_gpu
    from studio.ui.form_spec import set_path

    cfg, model = _job_and_model(config)
    if cfg is None or model is None:
        return None, "No estimate yet: fix the settings and choose a local model folder first."
    changes, est = propose_for_gpu(cfg, model, gpu_gb)
    out = copy.deepcopy(config)
    for path, value in changes.items():
        set_path(out, path, value)
    listed = ", ".join(f"`{k}` = {v}" for k, v in changes.items())
    verdict = "fits" if est.fits else "still does not fit: use a card with more memory or a smaller model"
    return out, f"For a {gpu_gb:g} GB GPU: {listed}. About {size_text(est.total)}, {verdict}."
