"""Everything the loop needs, built once from the config: accelerator, family, adapter, data, optimizer."""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

import torch

from studio.adapters import AdapterHandle, inject_adapter
from studio.config.vram_fit import checkpointing_for
from studio.data.sampler import EpochSampler
from studio.families.base import ModelFamily, build_family
from studio.runfolder.device import weight_dtype
from studio.train.ema import build_ema
from studio.train.memory import FusedBackwardOptimizer, swap_blocks
from studio.train.optim import build_optimizer, build_scheduler
from studio.train.ranks import LossModule, RankSlices
from studio.train.speed import apply_engines, compile_network


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
    loss_module: torch.nn.Module  # the accelerate-prepared `ranks.LossModule`: call it for the loss
    global_batch_size: int  # items per optimizer micro-step over all ranks (data position on resume)
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    ema: object = None
    notes: list[str] = field(default_factory=list)


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


def _global_batch_cfg(cfg, world: int):
    """A copy of `cfg` whose batch sizes are those of all ranks together (the samplers' view)."""
    if world == 1:
        return cfg
    out = cfg.model_copy(deep=True)
    out.training.batch_size = cfg.training.batch_size * world
    out.data.batch_size_per_resolution = [b * world for b in cfg.data.batch_size_per_resolution]
    return out


def _for_rank(batch_sampler, rank: int, world: int, pad: bool = True):
    return batch_sampler if world == 1 else RankSlices(batch_sampler, rank, world, pad)


def build_trainer(cfg, accelerator) -> Trainer:
    device = accelerator.device
    precision = accelerator.mixed_precision
    dtype = weight_dtype(precision)
    if cfg.memory.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    family = build_family(cfg, device, dtype)
    family.load()
    if cfg.memory.blocks_to_swap:  # before the adapter: only the frozen weights travel
        swap_blocks(family.trainable_module(), cfg.memory.blocks_to_swap, device)
    adapter = inject_adapter(family, cfg)
    if cfg.memory.blocks_to_swap:  # PEFT puts new weights beside their base layer's, here in system RAM
        for param in adapter.trainable_params():
            param.data = param.data.to(device)
    apply_engines(family, cfg)
    if checkpointing_for(cfg)[0]:  # `auto` was decided by the train command; here only for direct callers
        family.gradient_checkpointing()
    train_ds = family.train_dataset("train")
    world, rank = accelerator.num_processes, accelerator.process_index
    family.rank, family.world = rank, world  # random draws are made for the global batch (families.rng.draw)
    # Samplers are built for the global batch (world x batch size), then each rank takes its slice.
    global_cfg = _global_batch_cfg(cfg, world)
    opts = loader_options(cfg, device)
    batches = train_ds.batch_sampler(global_cfg, train=True)  # bucketed images: each batch holds one shape
    if batches is not None:
        sampler = batches
    else:
        sampler = EpochSampler(len(train_ds), cfg.training.seed, cfg.data.shuffle)
        batches = torch.utils.data.BatchSampler(sampler, global_cfg.training.batch_size, drop_last=False)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_sampler=_for_rank(batches, rank, world),
                                               collate_fn=family.collate, **opts)
    eval_loader = None
    if cfg.evaluation.strategy != "no":
        eval_ds = family.train_dataset("eval")
        if len(eval_ds):
            eval_batches = eval_ds.batch_sampler(global_cfg, train=False)
            if eval_batches is None:
                eval_batches = torch.utils.data.BatchSampler(range(len(eval_ds)), global_cfg.training.batch_size,
                                                             drop_last=False)
            eval_loader = torch.utils.data.DataLoader(eval_ds, batch_sampler=_for_rank(eval_batches, rank, world, pad=False),
                                                      collate_fn=family.collate, num_workers=0)
    accum = cfg.training.gradient_accumulation_steps
    batches = len(train_loader)  # global batches = this rank's batches
    steps_per_epoch = math.ceil(batches / accum)
    if cfg.training.max_steps > 0:
        total = cfg.training.max_steps
        epochs = math.ceil(total / steps_per_epoch)
    else:
        epochs = cfg.training.epochs
        total = epochs * steps_per_epoch
    sampler.set_total_batches(total * accum)  # progressive resolution splits the run's batches
    groups = adapter.param_groups(cfg.training.learning_rate)  # text encoders: own LR
    if cfg.optimizer.fused_backward_pass:  # one optimizer per tensor, stepped inside backward
        optimizer = FusedBackwardOptimizer(groups, lambda one: build_optimizer(one, cfg, total))
    else:
        optimizer = build_optimizer(groups, cfg, total)
    scheduler = build_scheduler(optimizer, cfg, total)
    loss_module, optimizer = accelerator.prepare(LossModule(family, list(adapter.components.values())), optimizer)
    if cfg.memory.torch_compile:
        compile_network(family, cfg)
    ema = None
    if cfg.training.use_ema:
        ema = build_ema(adapter.trainable_params(), cfg)
    return Trainer(cfg=cfg, accelerator=accelerator, family=family, adapter=adapter, train_loader=train_loader,
                   sampler=sampler, eval_loader=eval_loader, optimizer=optimizer, scheduler=scheduler,
                   generator=torch.Generator().manual_seed(cfg.training.seed), loss_module=loss_module,
                   global_batch_size=global_cfg.training.batch_size, batches_per_epoch=batches,
                   steps_per_epoch=steps_per_epoch, total_steps=total, epochs=epochs, ema=ema,
                   notes=list(cfg.notes))
