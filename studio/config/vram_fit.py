"""What the studio decides from the memory estimate (studio/config/vram.py) before a job launches: the
checkpointing it runs with, the settings that would make a run fit its GPU, the refusal or warning of a
run that would not (`memory.vram_check`), and the settings the VRAM picker proposes for a card size.
"""
from __future__ import annotations

import json
from pathlib import Path

from studio.config.model_shapes import ModelInfo, model_for
from studio.config.optimizers import spec as optimizer_spec
from studio.config.vram import GIB, VramEstimate, decide_checkpointing, estimate_vram, gpu_text, image_resolution
from studio.registry.adapters import ADAPTERS
from studio.registry.families import row as family_row


def fitting_changes(cfg, model: ModelInfo, gpu_bytes: float) -> list[tuple[dict, VramEstimate]]:
    """Settings that bring the estimate under `gpu_bytes`, cheapest first in quality/speed terms: each
    a partial config (dotted path -> value) and the estimate with it. Steps are tried cumulatively."""
    steps: list[dict] = []
    data = family_row(cfg.model.family).data
    if data == "images" and cfg.data.cache_mode != "on":
        steps.append({"data.cache_mode": "on"})
    if data == "songs" and not cfg.memory.offload_encoder:
        steps.append({"memory.offload_encoder": True})
    if cfg.memory.gradient_checkpointing is not True:
        steps.append({"memory.gradient_checkpointing": True})
    if optimizer_spec(cfg.optimizer.name).state_bytes > 2 and ADAPTERS[cfg.adapter.type].size == "full":
        steps.append({"optimizer.name": "adafactor"})
    batch = cfg.training.batch_size
    while batch > 1:
        batch //= 2
        steps.append({"training.batch_size": batch,
                      "training.gradient_accumulation_steps": cfg.training.gradient_accumulation_steps
                      * (cfg.training.batch_size // batch)})
    if getattr(cfg.model, "quantization", "none") == "none" and ADAPTERS[cfg.adapter.type].size != "full" \
            and "quantization" in _applicable(cfg):
        steps += [{"model.quantization": "8bit"}, {"model.quantization": "4bit"}]
    if data == "images":
        res = image_resolution(cfg)
        while res > 512:
            res -= 256
            steps.append({"data.resolution": res, **({"data.resolutions": None} if cfg.data.resolutions else {})})
    elif data == "text":
        seq = cfg.data.max_seq_length
        while seq > 256:
            seq //= 2
            steps.append({"data.max_seq_length": seq})
    elif data == "songs":
        for seconds in (120, 90, 60):
            if not cfg.data.chunk_seconds or cfg.data.chunk_seconds > seconds:
                steps.append({"data.chunk_seconds": seconds})
    out, changes, current = [], {}, cfg
    for step in steps:
        changes = {**changes, **step}
        current = apply_changes(cfg, changes)
        est = estimate_vram(current, model, gpu_bytes=gpu_bytes)
        out.append((dict(changes), est))
        if est.fits:
            break
    return out


def _applicable(cfg) -> set[str]:
    """Names of the model settings that apply to the job's family (the schema's `families=` hints)."""
    fields = type(cfg.model).model_fields
    out = set()
    for name in ("quantization",):
        families = ((fields[name].json_schema_extra or {}).get("ui") or {}).get("families") if name in fields else ()
        if families is None or cfg.model.family in families:
            out.add(name)
    return out


def apply_changes(cfg, changes: dict):
    """A copy of `cfg` with dotted-path values set (validated as the schema does)."""
    data = cfg.model_dump()
    for path, value in changes.items():
        section, key = path.split(".")
        data[section][key] = value
    return type(cfg).model_validate(data)


def gpu_memory(cfg) -> tuple[float | None, str]:
    """(bytes, name) of the GPU the job plans for: `memory.gpu_memory_gb`, else the first CUDA GPU it
    would use (none with `model.device=cpu`)."""
    if cfg.memory.gpu_memory_gb:
        return cfg.memory.gpu_memory_gb * GIB, ""
    if cfg.model.device in ("cpu", "mps"):
        return None, ""
    import torch

    if not torch.cuda.is_available():
        return None, ""
    props = torch.cuda.get_device_properties(0)
    return float(props.total_memory), props.name


REFUSE_ABOVE = 1.25  # `vram_check=refuse`: a run estimated above this share of the GPU is refused


def checkpointing_for(cfg, folder: str | Path | None = None, hub: bool = False) -> tuple[bool, str]:
    """The gradient checkpointing the job runs with, and the sentence saying why (the model's shapes are
    read only for `auto`)."""
    if cfg.memory.gradient_checkpointing != "auto":
        return decide_checkpointing(cfg, None, None)
    model = model_for(cfg, folder, hub)
    if model is None:
        return True, ("gradient checkpointing on (auto: the model's size cannot be read before loading, so the "
                      "memory-safe choice)")
    return decide_checkpointing(cfg, model, gpu_memory(cfg)[0])


def fit_problems(cfg, folder: str | Path | None = None, hub: bool = False) -> tuple[list[tuple[str, str]], list[str]]:
    """Before launch: (problems refusing the job, warnings). Refused with `memory.vram_check=refuse` when
    the estimate is over REFUSE_ABOVE x the GPU; warned when it is over the GPU; each names the settings
    that would make it fit."""
    if cfg.memory.vram_check == "off":
        return [], []
    gpu, name = gpu_memory(cfg)
    model = model_for(cfg, folder, hub) if gpu else None
    if model is None:
        return [], []
    checkpointing = decide_checkpointing(cfg, model, gpu)[0]
    est = estimate_vram(cfg, model, checkpointing=checkpointing, gpu_bytes=gpu, gpu_name=name)
    if est.fits:
        return [], []
    changes = fitting_changes(cfg, model, gpu)
    if changes:
        settings, best = changes[-1]
        listed = ", ".join(f"{k}={json.dumps(v)}" for k, v in settings.items())
        fix = (f"it would fit (about {best.total / GIB:.1f} GiB) with {listed}" if best.fits else
               f"even with {listed} it would need about {best.total / GIB:.1f} GiB: use a GPU with more memory "
               "or a smaller model")
    else:
        fix = "no setting tried here makes it fit; use a GPU with more memory or a smaller model"
    message = (f"the run needs about {est.total / GIB:.1f} GiB of GPU memory (estimate, +-15 %), the GPU has "
               f"{gpu_text(gpu)}: {fix}")
    if cfg.memory.vram_check == "refuse" and est.total > REFUSE_ABOVE * gpu:
        return [("memory.vram_check", message + "; or set memory.vram_check=warn to start anyway")], []
    return [], [message]


# ---- the VRAM preset picker (issue #19): a card size -> the settings that fit it ------------------------
GPU_SIZES_GB = (8, 12, 16, 24, 48, 80)


def propose_for_gpu(cfg, model: ModelInfo, gpu_gb: float) -> tuple[dict, VramEstimate]:
    """Settings (dotted path -> value) for a card of `gpu_gb` GB, and the estimate with them: the card's
    size, `auto` checkpointing, and when that does not fit, the cheapest changes that do (cached or
    offloaded encoders, checkpointing, smaller batch with more accumulation, a quantized base where the
    family has one, then resolution / sequence length / song chunks)."""
    gpu = gpu_gb * GIB
    changes: dict = {"memory.gpu_memory_gb": float(gpu_gb), "memory.gradient_checkpointing": "auto"}
    current = apply_changes(cfg, changes)
    on, _ = decide_checkpointing(current, model, gpu)
    est = estimate_vram(current, model, checkpointing=on, gpu_bytes=gpu)
    if est.fits:
        return changes, est
    steps = fitting_changes(current, model, gpu)
    if steps:
        more, est = steps[-1]
        changes.update(more)
    return changes, est
