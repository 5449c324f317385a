"""Checkpoints that survive a kill at any moment.

Commit protocol: write everything into `.tmp-checkpoint-<step>/`, fsync each file, write
`manifest.json` last, fsync, rename to `checkpoint-<step>/`, fsync the run folder. A folder without a
manifest is incomplete and ignored; leftovers of an interrupted save are deleted. Old checkpoints are
pruned only after the new one is committed.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from studio.runfolder.layout import MANIFEST, checkpoint_path, latest_checkpoint, list_checkpoints  # noqa: F401 (callers import them here)
from studio.train import disk, health



def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    state = {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def commit_checkpoint(run_dir: Path, step: int, *, adapter, optimizer, scheduler, trainer_state: dict,
                      generator: torch.Generator, ema=None) -> Path:
    """Write checkpoint-<step>/ atomically and return its path."""
    run_dir = Path(run_dir)
    final = checkpoint_path(run_dir, step)
    tmp = run_dir / f".tmp-{final.name}"
    weights = {k: v.detach().cpu().contiguous() for k, v in adapter.named_trainable().items()}
    health.require_finite(run_dir, step, weights, optimizer)  # a diverged step is never committed
    disk.require_space(run_dir, disk.checkpoint_estimate(run_dir, weights, optimizer), f"checkpoint-{step}")
    shutil.rmtree(tmp, ignore_errors=True)
    with disk.staging(run_dir, tmp):
        _write_staging(tmp, step, weights, optimizer, scheduler, trainer_state, generator, ema, adapter)
    if final.exists():  # a committed checkpoint of the same step (re-save after resume): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(run_dir)
    return final


def _write_staging(tmp: Path, step: int, weights: dict, optimizer, scheduler, trainer_state: dict, generator,
                   ema, adapter) -> None:
    tmp.mkdir(parents=True)
    files = {"trainable.safetensors": None, "optimizer.pt": None, "scheduler.pt": None, "rng.pt": None}
    save_file(weights, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({**rng_state(), "generator": generator.get_state()}, tmp / "rng.pt")
    if ema is not None:
        torch.save(ema.state_dict(), tmp / "ema.pt")
        files["ema.pt"] = None
    adapter.save(tmp, step=step)  # the loadable adapter too, so any checkpoint can be tried in a pipeline
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2), encoding="utf-8")
    for path in tmp.iterdir():
        _fsync_file(path)
    # finite: checked before writing (health.require_finite), so resume need not read the tensors again
    manifest = {"step": step, "time": time.time(), "files": sorted(p.name for p in tmp.iterdir()), "finite": True}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    _fsync_file(tmp / MANIFEST)


def clean_incomplete(run_dir: Path) -> list[Path]:
    """Delete leftovers of interrupted saves: temp folders and checkpoint folders without a manifest."""
    removed = []
    for path in Path(run_dir).glob(".tmp-checkpoint-*"):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    for path in Path(run_dir).glob("checkpoint-*"):
        if path.is_dir() and not (path / MANIFEST).is_file():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def prune_checkpoints(run_dir: Path, keep: int, protect: Path | None = None) -> None:
    """Keep the newest `keep` checkpoints (and `protect`, e.g. the best one)."""
    found = list_checkpoints(run_dir)
    for path in found[: max(0, len(found) - keep)]:
        if protect is None or path.resolve() != Path(protect).resolve():
            shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: Path, *, adapter, optimizer, scheduler, generator: torch.Generator, ema=None) -> dict:
    """Restore everything `commit_checkpoint` wrote; returns the trainer state (step, epoch, ...)."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise FileNotFoundError(f"checkpointing.resume_from: {path} is not a complete checkpoint "
                                f"(no {MANIFEST}); pick a checkpoint-<step> folder")
    weights = load_file(str(path / "trainable.safetensors"))
    params = adapter.named_trainable()
    missing = set(params) - set(weights)
    if missing:
        raise ValueError(f"checkpoint {path} does not match this adapter: {len(missing)} missing tensors, "
                         f"e.g. {sorted(missing)[:2]}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    configured = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rebase_learning_rate(optimizer, scheduler, configured)
    rng = torch.load(path / "rng.pt", weights_only=True)
    set_rng_state(rng)
    generator.set_state(rng["generator"])
    if ema is not None and (path / "ema.pt").exists():
        ema.load_state_dict(torch.load(path / "ema.pt", weights_only=True))
    return json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))


def rebase_learning_rate(optimizer, scheduler, configured: list[float]) -> None:
    """Resume with the learning rate of the config, not the one saved in the checkpoint.

    The scheduler's state holds its base rates, so without this a run resumed after lowering
    training.learning_rate (the fix for a diverged run) would go on at the old rate. Every scheduler the
    studio builds is a LambdaLR (lr = base * factor(step)), so scaling by new/old base keeps the curve's
    position. Unchanged rates leave everything as loaded: an uninterrupted and a resumed run stay equal.
    """
    saved = list(getattr(scheduler, "base_lrs", []))
    if len(saved) != len(configured) or saved == configured:
        return
    for group, old, new in zip(optimizer.param_groups, saved, configured):
        group["lr"] = group["lr"] * (new / old) if old else new
        group["initial_lr"] = new
    scheduler.base_lrs = list(configured)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports
