"""Everything the loop needs, built once from the config: accelerator, family, adapter, data, optimizer."""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

import torch

from studio.adapters import AdapterHandle, inject_adapter
from studio.data.sampler import EpochSampler
from studio.families.base import ModelFamily, build_family
from studio.train.ema import build_ema
from studio.train.optim import build_optimizer, build_scheduler


@dataclass
class Trainer:
    cfg: object
    accelerator: object
    family: ModelFamily
    adapter: AdapterHandle
    train_loader: torch.utils.data.DataLoader
    sampler: EpochSampler
    eval_loader: torch.utils.data.DataLoader | None
    optimizer: torch.optim.Optimizer
    scheduler: object
    generator: torch.Generator
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    ema: object = None
    notes: list[str] = field(default_factory=list)


def mixed_precision(cfg) -> str:
    choice = cfg.memory.mixed_precision
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def weight_dtype(precision: str) -> torch.dtype:
    """dtype of the frozen weights for an accelerate mixed-precision mode."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)


def standalone_device(cfg) -> tuple[torch.device, torch.dtype]:
    """Device and weight dtype for work outside the trainer's Accelerator (caching, estimate)."""
    from studio.train.device import job_device

    device = job_device(cfg)
    return device, weight_dtype(mixed_precision(cfg) if device.type == "cuda" else "no")


def loader_options(cfg, device: torch.device) -> dict:
    """FIELDS §9 platform defaults: 4 workers on Linux/macOS (capped by cores), 0 on Windows; pin memory
    only with CUDA; persistent workers whenever workers are used (not on Windows)."""
    dl = cfg.dataloader
    windows = sys.platform.startswith("win")
    workers = dl.num_workers if dl.num_workers is not None else (0 if windows else min(4, os.cpu_count() or 1))
    opts = {"num_workers": workers, "pin_memory": dl.pin_memory if dl.pin_memory is not None else device.type == "cuda"}
    if workers > 0:
        opts["prefetch_factor"] = dl.prefetch_factor or 2
        opts["persistent_workers"] = dl.persistent_workers if dl.persistent_workers is not None else not windows
    if device.type != "cuda":
        opts["pin_memory"] = False  # pinning does nothing without a CUDA device (FIELDS W03)
    return opts


def build_trainer(cfg, accelerator) -> Trainer:
    device = accelerator.device
    precision = accelerator.mixed_precision
    dtype = weight_dtype(precision)
    if cfg.memory.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    family = build_family(cfg, device, dtype)
    family.load()
    adapter = inject_adapter(family, cfg)
    if cfg.memory.gradient_checkpointing:
        family.gradient_checkpointing()
    train_ds = family.train_dataset("train")
    opts = loader_options(cfg, device)
    if hasattr(train_ds, "batch_sampler"):  # bucketed images: each batch holds one shape
        sampler = train_ds.batch_sampler(cfg, train=True)
        train_loader = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, collate_fn=family.collate, **opts)
    else:
        sampler = EpochSampler(len(train_ds), cfg.training.seed, cfg.data.shuffle)
        train_loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.training.batch_size, sampler=sampler,
                                                   collate_fn=family.collate, **opts)
    eval_loader = None
    if cfg.evaluation.strategy != "no":
        eval_ds = family.train_dataset("eval")
        if len(eval_ds):
            batching = ({"batch_sampler": eval_ds.batch_sampler(cfg, train=False)} if hasattr(eval_ds, "batch_sampler")
                        else {"batch_size": cfg.training.batch_size})
            eval_loader = torch.utils.data.DataLoader(eval_ds, collate_fn=family.collate, num_workers=0, **batching)
    accum = cfg.training.gradient_accumulation_steps
    batches = len(train_loader)
    steps_per_epoch = math.ceil(batches / accum)
    if cfg.training.max_steps > 0:
        total = cfg.training.max_steps
        epochs = math.ceil(total / steps_per_epoch)
    else:
        epochs = cfg.training.epochs
        total = epochs * steps_per_epoch
    if hasattr(sampler, "set_total_batches"):  # progressive resolution splits the run's batches
        sampler.set_total_batches(total * accum)
    optimizer = build_optimizer(adapter.param_groups(cfg.training.learning_rate), cfg, total)  # text encoders: own LR
    scheduler = build_scheduler(optimizer, cfg, total)
    module, optimizer = accelerator.prepare(family.trainable_module(), optimizer)
    if accelerator.num_processes > 1:
        train_loader = accelerator.prepare(train_loader)
    if cfg.memory.torch_compile:
        family.compile()
    ema = None
    if cfg.training.use_ema:
        ema = build_ema(adapter.trainable_params(), cfg)
    return Trainer(cfg=cfg, accelerator=accelerator, family=family, adapter=adapter, train_loader=train_loader,
                   sampler=sampler, eval_loader=eval_loader, optimizer=optimizer, scheduler=scheduler,
                   generator=torch.Generator().manual_seed(cfg.training.seed), batches_per_epoch=batches,
                   steps_per_epoch=steps_per_epoch, total_steps=total, epochs=epochs, ema=ema,
                   notes=list(cfg.notes))
