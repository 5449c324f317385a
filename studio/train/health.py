"""Never commit, and never resume from, a checkpoint holding non-finite numbers.

A diverged step (too high a learning rate, no clipping) turns the weights into NaN/Inf one step
before the loss shows it, so the loss check alone lets a poisoned checkpoint be committed and later
resumed. Checked here: the trainable tensors and every tensor of the optimizer state.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger("studio.train")
MANIFEST = "manifest.json"


class NonFiniteState(RuntimeError):
    """The weights or the optimizer state hold NaN/Inf; the message names the last good checkpoint."""


EXPECTED = (NonFiniteState,)  # failures whose message says it all: logged without a traceback


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def first_non_finite(named: dict, optimizer_state=None) -> str | None:
    """The name of the first tensor holding NaN/Inf ("optimizer state" for the optimizer), else None."""
    for name, tensor in named.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    for tensor in _tensors(optimizer_state or {}):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return "optimizer state"
    return None


def last_good_note(run_dir: Path) -> str:
    good = resumable_checkpoint(run_dir, quiet=True)
    return (f"the last good checkpoint is {good.name}" if good is not None
            else "there is no good checkpoint yet")


def require_finite(run_dir: Path, step: int, named: dict, optimizer) -> None:
    """Raise NonFiniteState before a checkpoint of non-finite weights/optimizer state is written."""
    bad = first_non_finite(named, optimizer.state_dict()["state"])
    if bad is not None:
        raise NonFiniteState(
            f"the training diverged: {bad} holds NaN/Inf at step {step}, so checkpoint-{step} was not saved; "
            f"{last_good_note(run_dir)}. Lower training.learning_rate or enable clipping (training.max_grad_norm)")


def checkpoint_is_finite(path: Path) -> bool:
    """True when a committed checkpoint's weights and optimizer state are all finite.

    Checkpoints written since this check existed say so in their manifest; older ones are read."""
    path = Path(path)
    try:
        if json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("finite") is True:
            return True
    except (OSError, ValueError):
        return False
    weights, optim = path / "trainable.safetensors", path / "optimizer.pt"
    if not weights.is_file():
        return True  # nothing numeric to check (a checkpoint of another writer)
    from safetensors.torch import load_file

    state = torch.load(optim, weights_only=True)["state"] if optim.is_file() else None
    return first_non_finite(load_file(str(weights)), state) is None


def resumable_checkpoint(run_dir: Path, quiet: bool = False) -> Path | None:
    """The newest complete checkpoint whose numbers are all finite (a poisoned one is skipped)."""
    from studio.runfolder.layout import list_checkpoints

    for path in reversed(list_checkpoints(run_dir)):
        if checkpoint_is_finite(path):
            return path
        if not quiet:
            log.warning("skipping %s: it holds NaN/Inf weights or optimizer state", path.name)
    return None


def resume_point(run_dir: Path, resume_from: str, auto_resume: bool) -> Path | None:
    """The checkpoint a run starts from: `resume_from` (refused when poisoned), else with auto_resume
    the newest finite one, else none."""
    if resume_from:
        if not checkpoint_is_finite(Path(resume_from)):
            raise NonFiniteState(f"checkpointing.resume_from: {resume_from} holds NaN/Inf weights or optimizer "
                                 f"state; pick an earlier checkpoint ({last_good_note(run_dir)})")
        return Path(resume_from)
    return resumable_checkpoint(run_dir) if auto_resume else None
