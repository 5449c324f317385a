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
    device = job_device(cfg)
    return device, weight_dtype(mixed_precision(cfg) if device.type == "cuda" else "no")


# `model.device` (FIELDS M09): accelerate picks CUDA, then MPS, then the CPU by itself; the setting
# decides whether that choice is allowed: `cpu` forces the CPU, `cuda` / `mps` refuse to start
# (instead of training silently on the CPU) when PyTorch cannot see that device.
def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def check_device(cfg) -> None:
    """Raise a ConfigError naming `model.device` when the chosen device is not usable here, or naming the
    `memory` engine that cannot run on it."""
    from studio.config.errors import ConfigError

    choice = cfg.model.device
    if choice == "cuda" and not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build of torch)"
        raise ConfigError([("model.device", f"'cuda' was chosen but PyTorch {torch.__version__} sees no CUDA "
                            f"GPU (CUDA build: {build}); choose 'auto' or 'cpu', or install a CUDA build "
                            "of torch on a machine with an NVIDIA driver")])
    if choice == "mps" and not mps_available():
        raise ConfigError([("model.device", "'mps' was chosen but Apple's Metal (MPS) backend is not "
                            "available here (it needs macOS 12.3+ on Apple silicon); choose 'auto' or 'cpu'")])
    if choice == "mps" and torch.cuda.is_available():
        raise ConfigError([("model.device", "'mps' cannot be chosen on a machine with a CUDA GPU; choose "
                            "'cuda', 'auto' or 'cpu'")])
    from studio.config.sections.runtime import engine_problems

    device_type = job_device_type(cfg)
    problems = device_problems(cfg, device_type)
    # a speed engine this machine cannot run (memory.*): refused before anything loads
    problems += engine_problems(cfg, cuda=device_type == "cuda")
    if problems:
        raise ConfigError(problems)


def device_problems(cfg, device_type: str) -> list[tuple[str, str]]:
    """Settings that need CUDA while the job runs on `device_type` ("cuda", "mps", "cpu"): the quantized
    bases (`studio/families/quantize.py`)."""
    out = []
    if device_type != "cuda" and cfg.model.fp8_base:
        out.append(("model.fp8_base", f"float8 weights need an NVIDIA GPU with float8 support (Ada, Hopper or "
                    f"newer); training runs on '{device_type}' here. Turn it off, or use model.quantization "
                    "'8bit' with model.quantization_backend 'torchao', which also runs on the CPU"))
    if device_type != "cuda" and cfg.model.quantization != "none" and cfg.model.quantization_backend == "bitsandbytes":
        out.append(("model.quantization", f"'{cfg.model.quantization}' through bitsandbytes needs a CUDA GPU "
                    f"(the diffusers and transformers loaders refuse to quantize without one); training runs "
                    f"on '{device_type}' here. Image families: use model.quantization_backend 'torchao' with "
                    "'8bit'; or set model.quantization to 'none'"))
    return out


def accelerator_options(cfg) -> dict:
    """Keyword arguments for `accelerate.Accelerator` that put the job on the chosen device. `auto` on a
    machine with neither CUDA nor MPS says `cpu` too: without it, the ranks of a launched job on such a
    machine each start as a lone process instead of joining one gloo group."""
    return {"cpu": job_device(cfg).type == "cpu"}


def job_device_type(cfg) -> str:
    """"cuda", "mps" or "cpu": where `model.device` puts the job on this machine."""
    if cfg.model.device in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda"
    if cfg.model.device in ("auto", "mps") and mps_available():
        return "mps"
    return "cpu"


def job_device(cfg) -> torch.device:
    """The device outside an Accelerator (caching, estimate, export): the same rule as the trainer's."""
    check_device(cfg)
    return torch.device(job_device_type(cfg))

