"""A DoRA adapter re-expressed as a plain LoRA, for ComfyUI / A1111 users.

ComfyUI applies a DoRA file's magnitude dividing by the norm of the base weight, where PEFT (which trained
it) divides by the norm of the adapted weight (an open upstream difference), so a DoRA layer can come out
up to about 28 % different there. Every loader applies a plain LoRA the same way, so the DoRA change of
each layer is written as one: delta = merged DoRA weight (PEFT's own `merge_safe`) - base weight, cut to
`adapter.dora_as_lora_rank` by a truncated SVD (as PEFT's `convert_to_lora` does for other methods: its
`get_delta_weight` leaves DoRA's magnitude out, hence the merged weight here), in the same kohya single-file
layout as the LoRA export. Each layer's relative Frobenius error |delta - up @ down| / |delta| is measured;
the export record carries the max and mean.
"""
from __future__ import annotations

import torch

from studio.adapters import formats, peft_backend
from studio.adapters.formats import UnsupportedExport

_DIFFERENCE = ("DoRA in ComfyUI / A1111: they divide the magnitude by the base weight's norm where PEFT divides "
               "by the adapted weight's (an open upstream difference), so a layer of the kohya DoRA file can differ "
               "by up to ~28 % there.")
COMFYUI_DORA_NOTE = (_DIFFERENCE + " For an exact result in those tools set adapter.dora_as_lora_rank: the run "
                     "then also writes the DoRA change as a plain LoRA file, with its measured error.")
COMFYUI_DORA_USE = _DIFFERENCE + " Load {file} there instead: the same change as a plain LoRA (error in its record)."
EXACT = 1e-4  # per-layer relative error below which a re-expression counts as exact (full rank: float noise)


def tensors_and_error(handle, rank: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The kohya-keyed plain-LoRA tensors of every DoRA layer at `rank` (less where a layer is smaller), and
    {"rank", "alpha", "layers", "max_rel_error", "mean_rel_error", "per_layer"} (errors: relative Frobenius norms)."""
    if handle.impl.KOHYA_KEYS or handle.kind != "dora":
        raise UnsupportedExport("a LoRA re-expression is written for PEFT DoRA runs only")
    layers: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    errors: dict[str, float] = {}
    for name, net in handle.components.items():
        prefix = handle.family.kohya_prefixes.get(name)
        if prefix is None:
            raise UnsupportedExport(f"the kohya layout has no name for '{name}'")
        for path, layer in peft_backend.tuner_layers(net):
            if peft_backend.ADAPTER_NAME not in getattr(layer, "lora_magnitude_vector", {}):
                continue
            down, up, err = _layer_as_lora(layer, rank)
            layers.setdefault(name, {})[path] = (down, up)
            errors[f"{prefix}_{path.replace('.', '_')}"] = err
    # One alpha for every layer (diffusers' kohya reader drops per-layer alphas that differ from the rest):
    # the largest rank, each layer's up factor rescaled so that up @ down * alpha / rank is its change.
    alpha = max((down.shape[0] for parts in layers.values() for down, _ in parts.values()), default=1)
    out: dict[str, torch.Tensor] = {}
    for name, parts in layers.items():
        weights, scales = {}, {}
        for path, (down, up) in parts.items():
            r = down.shape[0]
            weights[f"{path}.lora_A.weight"], weights[f"{path}.lora_B.weight"] = down, up * (r / alpha)
            scales[path] = alpha / r
        out.update(formats.peft_to_kohya("lora", handle.family.kohya_prefixes[name], weights, scales, {}))
    values = list(errors.values())
    stats = {"rank": rank, "alpha": alpha, "layers": len(values), "max_rel_error": max(values, default=0.0),
             "mean_rel_error": sum(values) / len(values) if values else 0.0, "per_layer": errors}
    return out, stats


@torch.no_grad()
def _layer_as_lora(layer, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(down (r, in), up (out, r), relative error) of one PEFT DoRA Linear layer's change to its weight."""
    base = layer.get_base_layer()
    if not isinstance(base, torch.nn.Linear):
        raise UnsupportedExport(f"DoRA on {type(base).__name__} layers has no LoRA re-expression here "
                                "(Linear layers only)")
    weight = base.weight.detach()
    variant = layer.lora_variant[peft_backend.ADAPTER_NAME]
    merged = variant.merge_safe(layer, peft_backend.ADAPTER_NAME, weight.clone())
    delta = (merged.float() - weight.float())
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    r = min(rank, s.shape[0])
    root = s[:r].sqrt()
    up, down = u[:, :r] * root, root[:, None] * vh[:r]  # the singular values split between both factors
    norm = delta.norm()
    err = float((delta - up @ down).norm() / norm) if norm > 0 else 0.0
    return down.contiguous(), up.contiguous(), err
