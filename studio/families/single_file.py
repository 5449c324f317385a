"""A flow family's transformer from one original-layout `.safetensors` file: FLUX.1 as BFL ships it, SD3 /
3.5 as Stability does, Z-Image as Tongyi does, Anima as CircleStone does; the files ComfyUI and Forge load.

Read the way diffusers reads them: the transformer class's `from_single_file` with diffusers' own key
converter (`diffusers.loaders.single_file_utils`). A transformer file has no VAE, text encoders,
tokenizers or scheduler, and no config: those come from `model.extras_path`, a diffusers folder or hub id
(what `from_single_file(config=...)` takes), or when it is empty from the repository diffusers infers from
the file's keys (`fetch_diffusers_config`; e.g. black-forest-labs/FLUX.1-dev), as diffusers does.

The checks before loading read the file's header only (`studio/config/single_file.py`: a Flux file given
as `sd3`, a LoRA, a schnell file as dev). Two things diffusers' loaders do not do, added here:
- a file whose weights do not cover the configured transformer is refused, naming what is missing,
  instead of leaving parameters unset;
- FLUX.1's converter splits each single block's fused `linear1` at FLUX.1's width (3072); a file of
  another width (the tiny test model) has its rows placed at those offsets first, so the same converter
  maps every name.
Anima: the file's `net.llm_adapter.*` weights are the LLM adapter, which diffusers keeps as a separate
part (`text_conditioner`, same parameter names); they are loaded into it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from studio.config.single_file import (ANIMA_ADAPTER, COMFY_PREFIX, NAMES_BY_CLASS, default_extras, header,
                                      unknown_release)

FLUX_WIDTH = 3072  # the width diffusers' Flux converter assumes (`inner_dim`)


def extras_source(cfg, file: str) -> str:
    """Where the parts beside the transformer (and its config) come from for a single-file `model.path`."""
    extras = cfg.model.extras_path.strip()
    if extras:
        from studio.families.paths import resolve_model_path

        return resolve_model_path(extras)
    found = default_extras(cfg.model.family, header(file))
    if found is None:
        raise ValueError(f"model.extras_path: {unknown_release(cfg.model.family, Path(file).name)}")
    return found


# ---- loading ------------------------------------------------------------------------------------------
def _flux_state(checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' Flux converter on a file of any width (see the module note), giving diffusers' names."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    checkpoint = {k.removeprefix(COMFY_PREFIX): v for k, v in checkpoint.items()}
    width = checkpoint["img_in.weight"].shape[0]
    if width == FLUX_WIDTH:
        return convert_flux_transformer_checkpoint_to_diffusers(checkpoint)
    mlp = None
    for key in [k for k in checkpoint if k.startswith("single_blocks.") and ".linear1." in k]:
        fused = checkpoint[key]
        mlp = fused.shape[0] - 3 * width
        spread = fused.new_zeros((3 * FLUX_WIDTH + 4 * FLUX_WIDTH, *fused.shape[1:]))
        for n, part in enumerate(fused.split((width, width, width, mlp))):
            spread[n * FLUX_WIDTH:n * FLUX_WIDTH + part.shape[0]] = part
        checkpoint[key] = spread
    state = convert_flux_transformer_checkpoint_to_diffusers(checkpoint)
    for key in state:
        if ".attn.to_" in key and key.startswith("single_transformer_blocks."):
            state[key] = state[key][:width]
        elif ".proj_mlp." in key:
            state[key] = state[key][:mlp]
    return state


def load_transformer(class_name: str, file: str, extras: str, dtype: torch.dtype, options: dict,
                     revision: str | None = None) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The transformer from `file` (diffusers' converter and `from_single_file`, config from `extras`), and
    the weights of the file that are not the transformer's (Anima's LLM adapter; {} for the others)."""
    import diffusers
    from accelerate import init_empty_weights
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    cls, name = getattr(diffusers, class_name), Path(file).name
    checkpoint = load_single_file_checkpoint(file)
    rest = {}
    if class_name == "CosmosTransformer3DModel":  # Anima: the LLM adapter is its own part in diffusers
        rest = {k.removeprefix(ANIMA_ADAPTER): checkpoint.pop(k) for k in list(checkpoint) if k.startswith(ANIMA_ADAPTER)}
    try:  # to diffusers' names here, so that what is missing can be named before any weight is placed
        if class_name == "FluxTransformer2DModel":
            state = _flux_state(checkpoint)
        else:
            state = SINGLE_FILE_LOADABLE_CLASSES[class_name]["checkpoint_mapping_fn"](checkpoint=checkpoint, config=None)
    except KeyError as err:  # the converters ask for each original name they map
        raise ValueError(f"model.path: {name} lacks {err.args[0]!r}, which diffusers' converter needs: not a "
                         f"whole {NAMES_BY_CLASS.get(class_name, class_name)} in its original layout") from None
    config = cls.load_config(extras, subfolder="transformer", revision=revision)
    with init_empty_weights():
        expected = set(cls.from_config(config).state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(f"model.path: {name} lacks {len(missing)} weights of the transformer that {extras}'s "
                         f"config describes (e.g. {', '.join(missing[:3])}); is model.extras_path the same "
                         "model (size, dev / schnell)?")
    state = {k: v for k, v in state.items() if k in expected}  # what diffusers would warn about and skip
    options = dict(options)
    device_map = options.pop("device_map", None)  # from_single_file places weights with `device`
    if device_map:
        options["device"] = device_map[""]
    # Keys already diffusers': from_single_file loads them as they are (no second conversion).
    model = cls.from_single_file(state, config=extras, subfolder="transformer", torch_dtype=dtype,
                                 config_revision=revision, **options)
    return model, rest


def load_llm_adapter(conditioner: torch.nn.Module, weights: dict[str, torch.Tensor], file: str) -> None:
    """Anima: the file's LLM adapter into diffusers' `text_conditioner` (same names, all of them)."""
    if not weights:
        return  # a file without it: the conditioner stays model.extras_path's
    result = conditioner.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        odd = result.missing_keys or result.unexpected_keys
        raise ValueError(f"model.path: the LLM adapter in {Path(file).name} does not match Anima's "
                         f"text_conditioner ({len(odd)} names differ, e.g. {', '.join(odd[:3])})")
