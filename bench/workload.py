"""The CPU benchmark's workload: the tiny SD 1.5 demo job (`presets/tiny-sd15-lora.json`), trained
from the studio's dataset cache, and the same data and settings handed to the bare loops.

Everything the studio side uses is the studio's own code: `studio preprocess` builds the cache,
`build_trainer` loads the model, injects the adapter and wires the DataLoader over the cache.
The bare side gets the very tensors the studio's dataset yields, stacked in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

PRESET = Path(__file__).resolve().parent.parent / "presets" / "tiny-sd15-lora.json"


def job_overrides(run_dir: Path, steps: int, logging_steps: int | None = None, extra: list[str] = ()) -> list[str]:
    """The demo preset, trained from the cache, with nothing but training steps in the timed window:
    no samples, no checkpoints (their cost is per save, not per step)."""
    out = [f"job.output_dir={run_dir}", f"training.max_steps={steps}", "sampling.every_steps=0",
           "sampling.at_end=false", "checkpointing.save_strategy=no", "data.cache_mode=on", "model.device=cpu"]
    if logging_steps is not None:
        out.append(f"logging.logging_steps={logging_steps}")
    return out + list(extra)  # the user's --set last: they win


def load_job(run_dir: Path, steps: int, logging_steps: int | None = None, extra: list[str] = ()):
    from studio.config import finalize_job, load_config

    return finalize_job(load_config(str(PRESET), job_overrides(run_dir, steps, logging_steps, extra)))


def check_comparable(cfg) -> None:
    """The bare loop implements the demo job's recipe only; refuse silently different comparisons."""
    problems = []
    if cfg.optimizer.name != "adamw":
        problems.append(f"optimizer.name={cfg.optimizer.name} (bare loop: adamw)")
    if cfg.scheduler.name != "constant" or cfg.scheduler.warmup_steps or cfg.scheduler.warmup_ratio:
        problems.append("scheduler must be constant without warmup")
    if cfg.loss.snr_gamma or cfg.loss.noise_offset or cfg.loss.loss_weighting != "none":
        problems.append("loss.snr_gamma / noise_offset / loss_weighting must be off")
    if cfg.training.gradient_accumulation_steps != 1 or cfg.training.use_ema:
        problems.append("training.gradient_accumulation_steps must be 1 and use_ema off")
    if cfg.adapter.type != "lora" or cfg.adapter.train_text_encoder:
        problems.append("adapter must be a UNet-only lora")
    if problems:
        raise ValueError("bench: the bare loop cannot mirror this job: " + "; ".join(problems))


def bare_settings(cfg, target_modules: list[str]) -> dict:
    """The job's recipe as the bare loop's plain settings (JSON-able, no studio types)."""
    opt = cfg.optimizer
    return {"rank": cfg.adapter.rank, "alpha": cfg.adapter.alpha, "dropout": cfg.adapter.dropout,
            "target_modules": target_modules, "learning_rate": cfg.training.learning_rate,
            "betas": [opt.beta1 if opt.beta1 is not None else 0.9, opt.beta2 if opt.beta2 is not None else 0.999],
            "eps": opt.eps if opt.eps is not None else 1e-8, "weight_decay": opt.weight_decay,
            "scheduler": "constant", "max_grad_norm": cfg.training.max_grad_norm,
            "batch_size": cfg.training.batch_size, "seed": cfg.training.seed}


def adapted_modules(module: torch.nn.Module) -> list[str]:
    """Full paths of the layers carrying a LoRA (so the bare loop adapts exactly the same ones)."""
    return [name for name, m in module.named_modules() if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.ModuleDict)]


@dataclass
class Workload:
    cfg: object
    model_dir: str
    data: dict[str, torch.Tensor]  # latents (N,4,h,w), prompt_embeds (N,77,D), pixel_values, input_ids
    settings: dict
    trainer: object = None
    info: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)  # the bench's --set items

    def write_data(self, path: Path) -> Path:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.data.items()}, str(path))
        return path


def build_cache(cfg, work: Path) -> dict:
    """`python -m studio preprocess`, in process: encodes the demo images into the dataset cache."""
    from studio.commands.preprocess import run_preprocess
    from studio.runfolder.progress import read_progress

    prep_dir = work / "preprocess"
    prep_cfg = cfg.model_copy(deep=True)
    prep_cfg.job.output_dir = str(prep_dir)
    prep_dir.mkdir(parents=True, exist_ok=True)
    code = run_preprocess(prep_cfg, prep_dir)
    records, _ = read_progress(prep_dir)
    done = [r for r in records if r.get("event") == "done"]
    if code != 0 or not done:
        errors = [r.get("message") for r in records if r.get("event") == "error"]
        raise RuntimeError(f"bench: studio preprocess failed (exit {code}): {errors}")
    return {k: done[-1].get(k) for k in ("items", "encoded", "cache_dir")}


def studio_items(dataset) -> dict[str, torch.Tensor]:
    """Every item the studio's training dataset yields (epoch 0), stacked: what the studio trains on."""
    items = [dataset[(i, 0)] for i in range(len(dataset))]
    missing = [k for k in ("latents", "prompt_embeds") if k not in items[0]]
    if missing:
        raise RuntimeError(f"bench: the studio is not training from the cache (items lack {missing}); "
                           "check data.cache_mode and studio/data/image_cache.py")
    return {k: torch.stack([it[k] for it in items]) for k in ("latents", "prompt_embeds")}


def pixel_items(cfg, model_dir: str) -> dict[str, torch.Tensor]:
    """The same images as pixels (no cache) and their captions as CLIP token ids, for the VAE loop."""
    from transformers import CLIPTokenizer

    from studio.data.image_source import build_image_dataset

    dataset = build_image_dataset(cfg, "train", cache=None)
    items = [dataset[(i, 0)] for i in range(len(dataset))]
    tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")
    ids = tokenizer([it["caption"] for it in items], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return {"pixel_values": torch.stack([it["pixel_values"] for it in items]), "input_ids": ids}


def prepare(work: Path, steps: int, extra: list[str] = ()) -> Workload:
    """Cache the demo dataset, build the studio's trainer over it, and collect the bare loops' data."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from studio.families.paths import resolve_model_path
    from studio.runfolder.device import mixed_precision
    from studio.train.setup import build_trainer

    cfg = load_job(work / "run-studio", steps, extra=extra)
    check_comparable(cfg)
    model_dir = resolve_model_path(cfg.model.path)
    cache_info = build_cache(cfg, work)
    set_seed(cfg.training.seed)
    accelerator = Accelerator(mixed_precision=mixed_precision(cfg), cpu=True)
    trainer = build_trainer(cfg, accelerator)
    cache = getattr(trainer.family, "cache", None)
    if cache is None or not cache.serves_latents:
        raise RuntimeError("bench: the studio did not attach the dataset cache; the comparison would be unfair")
    data = {**studio_items(trainer.train_loader.dataset), **pixel_items(cfg, model_dir)}
    targets = adapted_modules(trainer.family.trainable_module())
    info = {"model": cfg.model.path, "resolution": cfg.data.resolution, "batch_size": cfg.training.batch_size,
            "adapter": f"{cfg.adapter.type} rank {cfg.adapter.rank} alpha {cfg.adapter.alpha}",
            "adapted_layers": len(targets), "items": int(data["latents"].shape[0]),
            "trainable_params": sum(p.numel() for p in trainer.adapter.trainable_params()),
            "latents_shape": list(data["latents"].shape[1:]), "cache": cache_info,
            "logging_steps": cfg.logging.logging_steps, "num_workers": cfg.dataloader.num_workers,
            "overrides": list(extra)}
    return Workload(cfg=cfg, model_dir=model_dir, data=data, settings=bare_settings(cfg, targets),
                    trainer=trainer, info=info, overrides=list(extra))
