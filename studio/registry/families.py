"""The family registry: one row per model family id.

A row says what the family trains on (`data`: images, songs or text), its variants, where its class
and its tiny-model writer live, the starting values it merges under a config, and `traits`: facts the
config schema and the UI use to show or check settings (so they never list family ids themselves).
A new family is its own module(s) under `studio/families/` plus one row here.

Traits:
  unet              a UNet latent-diffusion model (epsilon / v prediction, `model.prediction_type`)
  text_encoder_lora the adapter can also go on the text encoder(s) (`adapter.train_text_encoder`)
  attention_split   self- and cross-attention can be targeted apart (`adapter.attention_type`)
  min_snr           the loss supports min-SNR-gamma weighting (`loss.snr_gamma`)
  kohya_keys        its ComfyUI single file uses kohya keys (LyCORIS writes them for every adapter type)
  llm_adapter       a trainable LLM adapter sits between text encoder and denoiser (`adapter.freeze_llm_adapter`)
  custom_variants   `model.variant` may also name a fine-tune outside `variants` (the UI lets one be typed)
  t5_encoder        one text encoder is T5, which `model.t5_model_path` can load from a folder of its own
"""
from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import Any

DATA_KINDS = ("images", "songs", "text")


@dataclass(frozen=True)
class FamilyRow:
    id: str
    data: str  # one of DATA_KINDS: what `data.path` holds and how it is cached
    tiny_writer: str  # "module:function" writing a tiny random model folder (tests, offline demos)
    family_class: str | None = None  # "module:Class" of the ModelFamily; None = no trainer yet
    variants: tuple[str, ...] = ()  # allowed `model.variant` values; () = the family has none
    traits: frozenset[str] = frozenset()
    defaults: dict[str, Any] = field(default_factory=dict)  # partial config merged under the user's
    demo: dict[str, Any] = field(default_factory=dict)  # what the offline demo of its data kind needs more
    # Subfolders a local diffusers folder of this family must hold (checked before loading); () = no check.
    model_parts: tuple[str, ...] = ()
    # "module:function(path)" raising ValueError("model.path: ...") for a local model it cannot train,
    # run for jobs about to start (it may import torch); None = no family-specific check.
    source_check: str | None = None
    pipeline: str = ""  # the diffusers pipeline class that samples it ("" = not a diffusers pipeline family)


# Built-in offline data per data kind (written on first use; nothing is downloaded), for the family
# conformance test and demos: a family row only adds what its own model needs (`FamilyRow.demo`).
DEMO_DATA: dict[str, dict[str, Any]] = {
    "images": {"data": {"path": "demo:images", "resolution": 64}},
    "songs": {"data": {"path": "demo:songs", "min_duration": 2.0, "chunk_seconds": 0},
              "sampling": {"audio_seconds": 1.0}},
    "text": {"data": {"path": "presets/data/tiny-chat.jsonl", "max_seq_length": 256}},
}


_IMAGE_DEFAULTS = {"training": {"batch_size": 4}}
_SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_SD_TRAITS = frozenset({"unet", "text_encoder_lora", "attention_split", "min_snr", "kohya_keys"})

FAMILIES: dict[str, FamilyRow] = {row.id: row for row in (
    FamilyRow("sd15", "images", "studio.families.tiny_image:write_sd15", "studio.families.sd:SdFamily",
              traits=_SD_TRAITS, defaults={"data": {"resolution": 512}, **_IMAGE_DEFAULTS}, model_parts=_SD_PARTS,
              pipeline="StableDiffusionPipeline"),
    FamilyRow("sdxl", "images", "studio.families.tiny_image:write_sdxl", "studio.families.sd:SdFamily",
              traits=_SD_TRAITS, defaults={"data": {"resolution": 1024}, **_IMAGE_DEFAULTS},
              model_parts=_SD_PARTS + ("text_encoder_2", "tokenizer_2"), pipeline="StableDiffusionXLPipeline"),
    FamilyRow("sd3", "images", "studio.families.tiny_flow:write_sd3", "studio.families.sd3:Sd3Family",
              traits=frozenset({"kohya_keys", "t5_encoder"}),
              defaults={"data": {"resolution": 1024}, **_IMAGE_DEFAULTS,
                        "sampling": {"default_steps": 28, "default_guidance": 7.0}}),
    FamilyRow("flux", "images", "studio.families.tiny_flow:write_flux", "studio.families.flux:FluxFamily",
              variants=("dev", "schnell"), traits=frozenset({"kohya_keys", "t5_encoder"}), demo={"model": {"variant": "dev"}},
              defaults={"data": {"resolution": 1024}, **_IMAGE_DEFAULTS,
                        "sampling": {"default_steps": 28, "default_guidance": 3.5}}),
    FamilyRow("zimage", "images", "studio.families.tiny_zimage:write_zimage", "studio.families.zimage:ZImageFamily",
              defaults={"data": {"resolution": 1024}, **_IMAGE_DEFAULTS,
                        "sampling": {"default_steps": 9, "default_guidance": 0.0}}),
    FamilyRow("anima", "images", "studio.families.tiny_anima:write_anima", "studio.families.anima:AnimaFamily",
              traits=frozenset({"llm_adapter"}),
              defaults={"data": {"resolution": 1024}, **_IMAGE_DEFAULTS,
                        "sampling": {"default_steps": 30, "default_guidance": 4.0}}),
    FamilyRow("acestep", "songs", "studio.families.tiny_audio:write_acestep",
              "studio.families.acestep:AceStepFamily", variants=("turbo", "base", "sft"),
              demo={"model": {"variant": "turbo"}},
              traits=frozenset({"attention_split", "min_snr", "custom_variants"}),
              defaults={"adapter": {"rank": 64, "alpha": 128, "dropout": 0.1},
                        "training": {"learning_rate": 1e-4, "batch_size": 1, "gradient_accumulation_steps": 4,
                                     "epochs": 100},
                        "scheduler": {"warmup_steps": 100},
                        "checkpointing": {"save_strategy": "epoch", "save_every_n_epochs": 10}}),
    FamilyRow("causal_lm", "text", "studio.families.tiny_text:write_causal_lm",
              "studio.families.causal_lm:CausalLmFamily", variants=("sft", "pretrain"),
              demo={"model": {"variant": "sft"}}, source_check="studio.families.causal_lm_source:check_model_source",
              defaults={"adapter": {"rank": 16, "alpha": 16},
                        "training": {"learning_rate": 2e-4, "batch_size": 2, "gradient_accumulation_steps": 4,
                                     "epochs": 2},
                        "scheduler": {"warmup_ratio": 0.1}}),
)}

ALL_FAMILIES: tuple[str, ...] = tuple(FAMILIES)


def family_ids(*, data: str | None = None, trait: str | None = None, trainable: bool | None = None) -> tuple[str, ...]:
    """Family ids, in registry order, filtered by data kind, trait and whether a trainer exists."""
    return tuple(row.id for row in FAMILIES.values()
                 if (data is None or row.data == data) and (trait is None or trait in row.traits)
                 and (trainable is None or (row.family_class is not None) == trainable))


def row(family: str) -> FamilyRow:
    """The registry row of `family`; a ValueError names the allowed ids."""
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"model.family '{family}' is not available; available: {', '.join(FAMILIES)}") from None


def family_defaults(family: str) -> dict:
    """The family's starting values (a deep copy: callers merge into it)."""
    return copy.deepcopy(FAMILIES[family].defaults) if family in FAMILIES else {}


def demo_config(family: str) -> dict[str, Any]:
    """A partial config that trains `family`'s tiny model on the built-in data of its kind."""
    info = FAMILIES[family]
    out = copy.deepcopy(DEMO_DATA[info.data])
    for section, values in info.demo.items():
        out.setdefault(section, {}).update(copy.deepcopy(values))
    out.setdefault("model", {}).update(family=family, path=f"tiny:{family}")
    return out


def load_attr(target: str):
    """Import `"module:attribute"` and return the attribute."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)
