"""Adapter files: the kohya/ComfyUI single file, its `ss_*` header, and atomic writes.

Kohya key layout: `<prefix>_<module path with . as _>.<param>` plus an `.alpha` scalar per layer, where the
layer's strength is alpha / rank (prefixes `lora_unet`, `lora_te`/`lora_te1`, `lora_te2` on SD). LyCORIS
already stores its networks this way; PEFT's LoRA/DoRA/LoHa/LoKr keys are renamed (LoRA's renaming is
diffusers' `convert_state_dict_to_kohya`), with alpha taken from each layer's real PEFT scaling so rsLoRA
and custom alphas survive (diffusers writes alpha = rank, which is only right for alpha = rank).
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import torch

from studio.registry.adapters import ADAPTERS

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"  # the name diffusers picks first in a folder
KOHYA_SUFFIX = "_kohya.safetensors"
DORA_LORA_TAG = "_dora_as_lora"  # <job>_dora_as_lora_kohya.safetensors: a DoRA run's plain-LoRA re-expression
# PEFT parameter name -> kohya / LyCORIS parameter name
_PEFT_TO_KOHYA_PARAMS = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
                         "lora_magnitude_vector": "dora_scale"}
_LOHA_LOKR = re.compile(r"^(hada_w[12]_[ab]|hada_t[12]|lokr_w[12](_[ab])?|lokr_t[12])$")


class UnsupportedExport(ValueError):
    """This adapter cannot be written in the requested format (the message says why and what to do)."""


def kohya_file_name(job_name: str, fmt: str = "kohya") -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", job_name).strip("._") or "adapter"
    return safe + (DORA_LORA_TAG if fmt == "dora_lora" else "") + KOHYA_SUFFIX


def atomic_save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors write that never leaves a truncated file: temp file, fsync, rename."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = temp_name(path)
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- PEFT -> kohya --------------------------------------------------------------------------------
def peft_to_kohya(kind: str, prefix: str, weights: dict[str, torch.Tensor], scalings: dict[str, float],
                  ranks: dict[str, int]) -> dict[str, torch.Tensor]:
    """One network's PEFT state dict -> kohya keys. `scalings`/`ranks`: per module path, PEFT's
    effective scale and rank (alpha written = scale x rank, so kohya's alpha / rank is the same scale)."""
    if kind in ("lora", "dora"):
        return _lora_to_kohya(prefix, weights, scalings)
    if not ADAPTERS[kind].peft_kohya:
        raise UnsupportedExport(f"no kohya/ComfyUI format for PEFT's {kind}; train it with adapter.backend "
                                "'lycoris' to get a file ComfyUI and A1111 load")
    out: dict[str, torch.Tensor] = {}
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in weights.items():
        path, _, param = key.rpartition(".")
        if not _LOHA_LOKR.match(param):
            raise UnsupportedExport(f"key {key} has no kohya equivalent")
        by_module.setdefault(path, {})[param] = value
    for path, params in by_module.items():
        name = f"{prefix}_{path.replace('.', '_')}"
        scale = scalings[path]
        if kind == "lokr" and "lokr_w1" in params and "lokr_w2" in params:
            # Neither Kronecker factor is low-rank: LyCORIS and ComfyUI then use scale 1, so fold PEFT's in.
            params = {**params, "lokr_w2": params["lokr_w2"] * scale}
            out[f"{name}.alpha"] = torch.tensor(float(ranks[path]))
        else:
            out[f"{name}.alpha"] = torch.tensor(float(scale * ranks[path]))
        out.update({f"{name}.{param}": value for param, value in params.items()})
    return out


def _lora_to_kohya(prefix: str, weights: dict[str, torch.Tensor], scalings: dict[str, float]) -> dict:
    from diffusers.utils import convert_state_dict_to_kohya

    renamed_in = {}
    for key, value in weights.items():
        if key.endswith("lora_magnitude_vector"):
            continue  # diffusers' converter misses DoRA keys on the UNet: renamed below
        renamed_in[f"unet.{key}"] = value
    converted = convert_state_dict_to_kohya(renamed_in)
    out = {}
    for key, value in converted.items():
        name, _, param = key.partition(".")
        name = prefix + name[len("lora_unet"):]
        if param == "alpha":
            continue
        out[f"{name}.{param}"] = value
    for key, value in weights.items():
        path, _, param = key.rpartition(".")
        if param == "lora_magnitude_vector":
            # PEFT's magnitude is per output row (out,); kohya's dora_scale is (out, 1): norm on the output axis
            out[f"{prefix}_{path.replace('.', '_')}.dora_scale"] = value.reshape(-1, 1) if value.ndim == 1 else value
    for path, scale in scalings.items():
        name = f"{prefix}_{path.replace('.', '_')}"
        if f"{name}.lora_down.weight" in out:
            rank = out[f"{name}.lora_down.weight"].shape[0]
            out[f"{name}.alpha"] = torch.tensor(float(scale * rank))
    return out


def kohya_metadata(cfg, family, kind: str, backend: str, step: int | None, converted: bool) -> dict[str, str]:
    """kohya's `ss_*` header (what A1111/ComfyUI and civitai read) plus the family's base-model entries.
    `converted`: the weights were converted from PEFT keys (else they are LyCORIS' own kohya keys)."""
    a = cfg.adapter
    module = "networks.lora" if converted and kind in ("lora", "dora") else "lycoris.kohya"
    args = {"algo": kind if converted else _lycoris_algo(kind)}
    if a.conv_rank:
        args.update(conv_dim=str(a.conv_rank), conv_alpha=str(a.conv_alpha))
    if kind == "dora":
        args["dora_wd"] = "True"
    res = cfg.data.resolution
    meta = {
        "ss_network_module": module, "ss_network_dim": str(a.rank), "ss_network_alpha": str(a.alpha),
        "ss_network_args": json.dumps(args), "ss_resolution": f"({res}, {res})",
        "ss_output_name": cfg.job.name or "adapter", "ss_sd_model_name": os.path.basename(str(cfg.model.path)),
        "ss_learning_rate": str(cfg.training.learning_rate), "ss_seed": str(cfg.training.seed),
        "ss_training_finished_at": str(int(time.time())), "ss_studio_adapter_type": kind,
        "ss_studio_backend": backend,
    }
    if a.train_text_encoder:
        meta["ss_text_encoder_lr"] = str(a.text_encoder_lr)
    if step is not None:
        meta["ss_steps"] = str(step)
    meta.update(family.kohya_metadata())
    return meta


def _lycoris_algo(kind: str) -> str:
    from studio.adapters.lycoris_backend import ALGOS

    return ALGOS[kind]


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors.torch import load_file

    return load_file(str(path)), read_header(path)[1]


def read_header(path: Path) -> tuple[list[str], dict[str, str]]:
    """Key names and metadata of a safetensors file, without reading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys()), handle.metadata() or {}


def temp_name(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (hidden, tagged with this process)."""
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def remove_stale_temps(folder: Path) -> None:
    """Delete temp files and folders left in `folder` by studio processes that no longer run (a crash
    mid-export), so no loader ever picks up a half-written file."""
    import shutil

    for path in Path(folder).glob(".tmp-*"):
        match = re.match(r"\.tmp-(\d+)-", path.name)
        if not match or _alive(int(match.group(1))):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
