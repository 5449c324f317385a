"""Device and weight dtype of a job's process: the one place that decides them (training, caching,
estimate and export verification all ask here)."""
from __future__ import annotations

import torch


def mixed_precision(cfg) -> str:
    """accelerate's mixed-precision mode for `memory.mixed_precision` (`auto`: bf16, else fp16 on CUDA)."""
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
    use_cuda = torch.cuda.is_available() and cfg.model.device in ("auto", "cuda")
    device = torch.device("cuda" if use_cuda else "cpu")
    return device, weight_dtype(mixed_precision(cfg) if use_cuda else "no")
