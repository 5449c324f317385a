"""Rectified-flow image families (SD3, Flux, Z-Image, Anima): their loss settings and the checks on their
model folder.

The settings join the `loss` section (`LossSection` derives from `FlowLossSettings`); the names follow
diffusers' `train_dreambooth_lora_sd3.py` / `_flux.py` (`weighting_scheme`, `logit_mean`, `logit_std`,
`mode_scale`, `guidance_scale` -> `loss.guidance`) and FIELDS' "flow shift". Formulas: SD3 paper,
arXiv 2403.03206 (logit-normal / mode timestep densities, sigma_sqrt / cosmap weights, shift).

`flow_problems` names bad input before anything loads: a folder of the other pipeline (read from its
`model_index.json`, or `modular_model_index.json` for a modular pipeline such as Anima's), a missing text
encoder, a variant the transformer cannot be, bucket sizes that do not
divide into whole latent patches.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from studio.config.fields import Section, setting
from studio.config.single_file import file_problems, is_single_file, names_single_file

FLOW_FAMILIES = ("sd3", "flux", "zimage", "anima")
# VAE down-sampling (x8) x transformer patch (SD3: 2x2 patches; Flux: 2x2 latent packing).
PIXEL_MULTIPLE = 16
# What each family's folder must hold: the pipeline class in model_index.json and the sub-folders.
PIPELINES = {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline", "zimage": "ZImagePipeline",
             "anima": "AnimaModularPipeline"}
REQUIRED_PARTS = {
    "sd3": ("transformer", "vae", "scheduler", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
            "text_encoder_3", "tokenizer_3"),
    "flux": ("transformer", "vae", "scheduler", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
    "zimage": ("transformer", "vae", "scheduler", "text_encoder", "tokenizer"),
    "anima": ("transformer", "vae", "scheduler", "text_encoder", "tokenizer", "t5_tokenizer", "text_conditioner"),
}
INDEX_FILES = ("modular_model_index.json", "model_index.json")  # a modular pipeline's index first
# Each family's T5 (encoder, tokenizer) sub-folders: SD3's third encoder, Flux's second.
T5_PARTS = {"sd3": ("text_encoder_3", "tokenizer_3"), "flux": ("text_encoder_2", "tokenizer_2")}


WeightingScheme = Literal["logit_normal", "mode", "cosmap", "sigma_sqrt", "none"]


class FlowLossSettings(Section):
    """Loss settings of the flow-matching image families (mixed into the `loss` section)."""

    weighting_scheme: WeightingScheme = setting(
        "logit_normal", "How training timesteps are drawn and weighted (SD3 paper, arXiv 2403.03206). "
        "logit_normal: more steps at middle noise levels (the paper's best, and SD3's own); mode: a heavier "
        "or lighter middle set by mode_scale; cosmap / sigma_sqrt: uniform draws with a per-timestep loss "
        "weight; none: uniform draws, equal weights.", families=FLOW_FAMILIES)
    logit_mean: float = setting(0.0, "Centre of the logit-normal timestep draw. Below 0 trains more on "
                                "clean images (details), above 0 more on noisy ones (composition).",
                                ge=-5.0, le=5.0, step=0.1, families=FLOW_FAMILIES, group="advanced")
    logit_std: float = setting(1.0, "Spread of the logit-normal timestep draw; larger reaches the very "
                               "noisy and very clean ends more often.", gt=0.0, le=5.0, step=0.1,
                               families=FLOW_FAMILIES, group="advanced")
    mode_scale: float = setting(1.29, "Shape of the `mode` timestep draw: above 0 favours middle noise "
                                "levels, below 0 the ends (the paper uses 1.29).", ge=-1.0, le=2.0, step=0.01,
                                families=FLOW_FAMILIES, group="advanced")
    flow_shift: float = setting(0.0, "Shift of the noise schedule towards noisier timesteps (sigma' = "
                                "s*sigma / (1 + (s-1)*sigma)); used for training and samples. 0 = the "
                                "model's own: SD3 and Z-Image the scheduler's shift (3.0), Flux dev the "
                                "resolution-dependent shift of its pipeline, Flux schnell none.", ge=0.0, le=20.0,
                                step=0.1, families=FLOW_FAMILIES, group="advanced")
    guidance: float = setting(1.0, "Flux dev: the value fed to its guidance embedding while training. "
                              "1.0 is the common choice for LoRAs (ai-toolkit, SimpleTuner); samples use "
                              "the sampling guidance instead. Ignored by models without guidance "
                              "embedding (schnell).", ge=0.0, le=30.0, step=0.1, families=("flux",),
                              variants=("dev",), group="advanced")


def flow_problems(cfg) -> list[tuple[str, str]]:
    """Problems (field path, message) of an sd3 / flux config that can be seen without loading a model."""
    family = cfg.model.family
    if family not in FLOW_FAMILIES:
        return []
    problems = _bucket_problems(cfg)
    if family == "flux" and cfg.model.variant not in ("", "dev", "schnell"):
        problems.append(("model.variant", f"'{cfg.model.variant}' is not a Flux variant; allowed: dev, schnell"))
    path = cfg.model.path.strip()
    if path and not path.startswith("tiny:"):
        problems += model_folder_problems(family, path, cfg.model.variant, cfg.model.t5_model_path,
                                          cfg.model.extras_path)
    return problems + t5_folder_problems(cfg.model.t5_model_path)


def t5_folder_problems(t5_path: str) -> list[tuple[str, str]]:
    """`model.t5_model_path`: a local folder must hold a transformers T5 encoder (a hub id is left to the
    loader)."""
    t5_path = t5_path.strip()
    if not t5_path:
        return []
    root = Path(t5_path).expanduser()
    if not root.exists():
        if t5_path.startswith(("/", ".", "~")) or t5_path.count("/") != 1:
            return [("model.t5_model_path", f"{t5_path} does not exist; give a folder holding a T5 encoder "
                     "(config.json + .safetensors) or a hub id like `org/name`")]
        return []
    config = root / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
    except (OSError, json.JSONDecodeError):
        return [("model.t5_model_path", f"{root} has no readable config.json: not a transformers model folder "
                 "(point at the T5 encoder's own folder, e.g. a download's text_encoder_2 / text_encoder_3)")]
    if "t5" not in str(model_type):
        return [("model.t5_model_path", f"{root} holds a '{model_type}' model, not a T5 encoder")]
    return []


def _bucket_problems(cfg) -> list[tuple[str, str]]:
    d = cfg.data
    what = f"{cfg.model.family} needs image sides in whole {PIXEL_MULTIPLE}-pixel steps (VAE x8, 2x2 patches)"
    out = []
    if d.bucket_step % PIXEL_MULTIPLE:
        out.append(("data.bucket_step", f"{what}: use a multiple of {PIXEL_MULTIPLE} (got {d.bucket_step})"))
    for name, values in (("resolution", [d.resolution]), ("resolutions", d.resolutions)):
        bad = [r for r in values if r % PIXEL_MULTIPLE]
        if bad:
            out.append((f"data.{name}", f"{what}: use multiples of {PIXEL_MULTIPLE} (got {bad[0]})"))
    for field in ("min_bucket_resolution", "max_bucket_resolution"):
        value = getattr(d, field)
        if value % PIXEL_MULTIPLE:
            out.append((f"data.{field}", f"{what}: use a multiple of {PIXEL_MULTIPLE} or 0 (got {value})"))
    return out


def model_folder_problems(family: str, path: str, variant: str = "", t5_path: str = "", extras: str = "",
                          field: str = "model.path") -> list[tuple[str, str]]:
    """Read a local diffusers folder's `model_index.json`: right pipeline, every part present (the T5
    parts may be missing when `t5_path` gives them), variant matching the transformer. A single
    transformer file is read from its header, and the folder of its other parts (`extras`) checked the
    same way. A hub id or a missing path is left to the preflight and the loader."""
    root = Path(path).expanduser()
    if is_single_file(path):
        problems = file_problems(family, str(root), variant, extras)
        if extras.strip() and not extras.startswith("tiny:"):
            problems += model_folder_problems(family, extras, "", t5_path, field="model.extras_path")
        return problems
    if names_single_file(path) and field == "model.extras_path":
        return [(field, f"{root.name}: give the diffusers folder or hub id of the other parts, not a file")]
    if not root.is_dir():
        return []
    index = next((root / name for name in INDEX_FILES if (root / name).is_file()), None)
    if index is None:
        return [(field, f"{root} has no model_index.json: not a diffusers pipeline folder")]
    try:
        info = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return [(field, f"{index} cannot be read: {err}")]
    found = str(info.get("_class_name", ""))
    if found != PIPELINES[family]:
        other = next((f for f, cls in PIPELINES.items() if cls == found), None)
        hint = f" (set model.family '{other}')" if other else ""
        return [(field, f"{root} holds a {found or 'unknown'} model, not {PIPELINES[family]} "
                 f"as model.family '{family}' needs{hint}")]
    missing = [p for p in REQUIRED_PARTS[family] if not (root / p).is_dir() or info.get(p, [None])[0] is None]
    if t5_path.strip():  # the T5 encoder comes from model.t5_model_path; its tokenizer from there too if need be
        missing = [p for p in missing if p not in T5_PARTS.get(family, ())]
    if missing:
        t5 = [p for p in missing if p in T5_PARTS.get(family, ())]
        what = "the T5 text encoder " if t5 else "the Qwen3 text encoder " if (
            family == "anima" and "text_encoder" in missing) else ""
        return [(field, f"{root} lacks {what}sub-folder(s) {', '.join(missing)}, which {family} training "
                 "needs")]
    return _variant_problems(family, root, variant)


def _variant_problems(family: str, root: Path, variant: str) -> list[tuple[str, str]]:
    if family != "flux" or not variant:
        return []
    try:
        config = json.loads((root / "transformer" / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    has_guidance = bool(config.get("guidance_embeds"))
    if variant == "dev" and not has_guidance:
        return [("model.variant", f"'dev' needs a guidance embedding, but {root} has none (a schnell-type "
                 "model): set model.variant 'schnell'")]
    if variant == "schnell" and has_guidance:
        return [("model.variant", f"{root} has a guidance embedding (a dev-type model): set model.variant 'dev'")]
    return []

