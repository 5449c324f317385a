"""A single original-layout transformer file as `model.path` (SD3, Flux, Z-Image, Anima), checked from its
header before anything loads: readable, this family's transformer, the Flux variant it is, and whether
diffusers can tell where its other parts come from. Loading it is `studio/families/single_file.py`'s.
"""
from __future__ import annotations

from pathlib import Path

SUFFIX = ".safetensors"
COMFY_PREFIX = "model.diffusion_model."  # how ComfyUI saves a whole checkpoint; diffusers strips it too
ANIMA_ADAPTER = "net.llm_adapter."  # Anima: its LLM adapter, kept in diffusers as `text_conditioner`
# Keys only that family's original-layout transformer has (any of them, after COMFY_PREFIX is removed).
SIGNATURES = {
    "flux": ("double_blocks.0.img_attn.qkv.weight",),
    "sd3": ("joint_blocks.0.x_block.attn.qkv.weight",),
    "zimage": ("cap_pad_token",),
    "anima": ("net.blocks.0.self_attn.q_proj.weight",),
}
NAMES = {"flux": "a FLUX.1 transformer", "sd3": "an SD3 / 3.5 transformer", "zimage": "a Z-Image transformer",
         "anima": "an Anima (Cosmos-Predict2) transformer"}
NAMES_BY_CLASS = {"FluxTransformer2DModel": "FLUX.1 transformer", "SD3Transformer2DModel": "SD3 transformer",
                  "ZImageTransformer2DModel": "Z-Image transformer", "CosmosTransformer3DModel": "Anima DiT"}
# The model types diffusers infers (`infer_diffusers_model_type`) that are each family's, by their start.
DIFFUSERS_TYPES = {"flux": ("flux-dev", "flux-schnell"), "sd3": ("sd3", "sd35"), "zimage": ("z-image",)}
# Anima is a Cosmos-Predict2 network, which diffusers maps to NVIDIA's repository; its parts are Anima's.
FIXED_EXTRAS = {"anima": "circlestone-labs/Anima-Base-v1.0-Diffusers"}


def names_single_file(path: str) -> bool:
    """Whether `path` names one .safetensors file (by its name; the disk is not read)."""
    return Path(path.strip()).suffix.lower() == SUFFIX


def is_single_file(path: str) -> bool:
    return names_single_file(path) and Path(path).expanduser().is_file()


class _Shape:
    """A tensor's shape without its data: what diffusers' model-type inference reads."""

    def __init__(self, shape):
        self.shape = tuple(shape)


def header(path: str) -> dict[str, _Shape]:
    """Key -> shape from the file's header (no weights read). Raises ValueError naming model.path."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:  # the header only; no torch import
            return {k: _Shape(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for every bad header
        raise ValueError(f"model.path: {Path(path).name} is not a readable safetensors file "
                         f"({str(err).splitlines()[0][:120]})") from None


def _bare(keys) -> set[str]:
    return {k.removeprefix(COMFY_PREFIX) for k in keys}


def file_family(keys) -> str | None:
    """Which flow family's original-layout transformer the keys are (None: none of them)."""
    bare = _bare(keys)
    return next((f for f, sig in SIGNATURES.items() if any(s in bare for s in sig)), None)


def default_extras(family: str, shapes: dict) -> str | None:
    """The repository diffusers would take the config and the other parts from (None: it cannot tell)."""
    if family in FIXED_EXTRAS:
        return FIXED_EXTRAS[family]
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS, infer_diffusers_model_type

    try:
        model_type = infer_diffusers_model_type(shapes)
    except Exception:  # noqa: BLE001 - diffusers' inference indexes keys it expects; a partial file has none
        return None
    if not model_type.startswith(DIFFUSERS_TYPES[family]):
        return None  # e.g. the tiny SD3, too small for diffusers' size-based inference
    return DIFFUSERS_DEFAULT_PIPELINE_PATHS[model_type]["pretrained_model_name_or_path"]


def unknown_release(family: str, name: str) -> str:
    """What to say when `default_extras` cannot tell where a file's other parts come from."""
    return (f"diffusers cannot tell which {family} release {name} is; give the diffusers folder or hub id its "
            "VAE, text encoders and transformer config come from")


def file_problems(family: str, path: str, variant: str, extras: str) -> list[tuple[str, str]]:
    """A single-file `model.path` checked from its header: readable, this family's transformer in its
    original layout, the Flux variant it is, and where its other parts come from."""
    try:
        shapes = header(path)
    except ValueError as err:
        return [("model.path", str(err).removeprefix("model.path: "))]
    name = Path(path).name
    bare = _bare(shapes)
    if any("lora" in k.lower() for k in list(bare)[:200]):
        return [("model.path", f"{name} is a LoRA / adapter file, not a model; give the base model here")]
    found = file_family(shapes)
    if found is None:
        return [("model.path", f"{name} holds no original-layout {family} transformer (keys such as "
                 f"{SIGNATURES[family][0]}); expected the transformer file as its makers ship it, or a "
                 "diffusers folder")]
    if found != family:
        return [("model.path", f"{name} holds {NAMES[found]}, not {NAMES[family]} (set model.family '{found}')")]
    out = []
    if variant in ("dev", "schnell"):  # Flux's variants: dev has the guidance embedding, schnell not
        has_guidance = any(k.startswith("guidance_in.") for k in bare)
        if variant == "dev" and not has_guidance:
            out.append(("model.variant", f"{name} has no guidance embedding (a schnell-type model): set "
                        "model.variant 'schnell'"))
        elif variant == "schnell" and has_guidance:
            out.append(("model.variant", f"{name} has a guidance embedding (a dev-type model): set "
                        "model.variant 'dev'"))
    if not extras.strip() and default_extras(family, shapes) is None:
        out.append(("model.extras_path", unknown_release(family, name)))
    return out
