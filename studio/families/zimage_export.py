"""Z-Image's single file: the layout ComfyUI loads for it (comfy.ldm.lumina's NextDiT, the original layer names).

Keys: `diffusion_model.<original layer>.lora.down.weight` / `.lora.up.weight`, alpha / rank folded into up (no
alpha keys). It is the one layout in which diffusers' Z-Image converter
(`_convert_non_diffusers_z_image_lora_to_diffusers`, which `ZImagePipeline.load_lora_weights` runs) splits a fused
`attention.qkv` back into to_q / to_k / to_v (its `lora_A/lora_B` and `lora_down/lora_up` branches keep `qkv` as it
is, a name the diffusers model does not have); ComfyUI reads the same `lora.down/lora.up` names under
`diffusion_model.` (its generic key map of the model's own weights).

Original names: diffusers' single-file converter (`convert_z_image_transformer_checkpoint_to_diffusers`) read
backwards, by converting each original layer whose diffusers name differs. The original model fuses q, k, v
into `attention.qkv` (rows q, k, v): LoRAs on to_q, to_k, to_v of one attention are one exact LoRA on qkv,
down = cat(A_q, A_k, A_v) (rows), up = block_diag(B_q s_q, B_k s_k, B_v s_v) (s = alpha / rank); a projection
without a LoRA gets zero rows. Layers whose original name diffusers' LoRA converter does not map back (the final
layer, the patch embedder) are named at export.
"""
from __future__ import annotations

import functools
import re

import torch

COMFY_PREFIX = "diffusion_model."
DOWN, UP = "lora.down.weight", "lora.up.weight"
# Original layers whose diffusers name differs; `layers.0.` stands for any block of any block list.
_PROBES = ("layers.0.attention.qkv", "layers.0.attention.out", "final_layer.linear",
           "final_layer.adaLN_modulation.1", "x_embedder")
_BLOCK = "layers.0."
_IN_BLOCK = re.compile(r"([a-z_]+\.\d+\.)(.+)")  # layers.3. / noise_refiner.0. / context_refiner.1.


@functools.cache
def _renames() -> dict[str, tuple[str, int, int]]:
    """diffusers name -> (original name, row block in it, number of blocks), from diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers as conv

    out = {}
    for probe in _PROBES:
        converted = list(conv({f"{probe}.weight": torch.zeros(3, 1)}))  # a fused weight: one key per row block
        for i, key in enumerate(converted):
            out[key.removesuffix(".weight").removeprefix(_BLOCK)] = (probe.removeprefix(_BLOCK), i, len(converted))
    return out


def original_name(path: str) -> tuple[str, int, int]:
    """diffusers module path -> (original layer, the row block it is in that layer, number of blocks)."""
    found = _IN_BLOCK.fullmatch(path)
    block, rest = found.groups() if found else ("", path)
    native, index, blocks = _renames().get(rest, (rest, 0, 1))
    return block + native, index, blocks


def comfy_tensors(layers: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{diffusers module path: (down (r, in), up (out, r) with the scale in)} -> the single file's tensors."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    sizes: dict[str, int] = {}
    for path, (down, up) in layers.items():
        native, index, blocks = original_name(path)
        key = COMFY_PREFIX + native
        if blocks == 1:
            out[f"{key}.{DOWN}"], out[f"{key}.{UP}"] = down, up
            continue
        fused.setdefault(key, {})[index] = (down, up)
        sizes[key] = blocks
    for key, parts in fused.items():
        rows = {up.shape[0] for _, up in parts.values()}
        if len(rows) != 1:
            raise ValueError(f"{key}: the fused projections differ in size ({sorted(rows)})")
        n = rows.pop()
        ordered = [parts[i] for i in sorted(parts)]
        down = torch.cat([d for d, _ in ordered])
        up = down.new_zeros(n * sizes[key], down.shape[0])
        start = 0
        for i in sorted(parts):
            d, u = parts[i]
            up[i * n:(i + 1) * n, start:start + d.shape[0]] = u
            start += d.shape[0]
        out[f"{key}.{DOWN}"], out[f"{key}.{UP}"] = down, up
    return out


def unreadable(modules: list[str]) -> list[str]:
    """The module paths diffusers' LoRA converter does not map back from their single-file names."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_z_image_lora_to_diffusers as conv

    one = torch.zeros(1, 1)
    back = conv(comfy_tensors({path: (one, one) for path in modules}))
    return [m for m in modules if f"transformer.{m}.lora_A.weight" not in back]
