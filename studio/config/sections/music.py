"""Rules of the music family (ACE-Step 1.5, FIELDS §2 M06, §3.5, §7): per-variant values and what each
variant allows. The settings themselves live in the ordinary sections with `families=("acestep",)`:
`model.variant` / `model.base_variant`, `loss.shift`, `loss.num_inference_steps`, `loss.cfg_ratio`,
`loss.loss_weighting`, `loss.snr_gamma`, `data.chunk_seconds`, `data.normalize`, `data.max_duration`,
`data.min_duration`, `memory.offload_encoder`, `sampling.audio_seconds`, `sampling.prompts[].lyrics`.

Empty music values mean "the variant's value"; they are resolved when used (`music_settings`), never
written back, so switching a saved config from turbo to base cannot keep turbo's values by accident.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MUSIC_VARIANTS = ("turbo", "base", "sft")
TURBO_REASON = ("turbo is guidance-distilled (sampled without CFG), so it trains without null-condition "
                "dropout and without min-SNR weighting; both are for base/sft")
DEFAULT_SNR_GAMMA = 5.0  # Side-Step's default (FIELDS Appendix A)
CHUNK_WARN_SECONDS = 60
# ACE-Step's original projection names -> AceStepTransformer1DModel's (diffusers' converter does the same)
ATTENTION_ALIASES = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "o_proj": "to_out.0"}


@dataclass(frozen=True)
class VariantValues:
    shift: float
    num_inference_steps: int
    cfg_ratio: float  # null-condition probability; 0 for turbo (not available)
    timesteps: str  # "discrete" (turbo's 8-step schedule) or "logit_normal" (continuous)


# FIELDS §7 per-variant table.
VARIANTS = {
    "turbo": VariantValues(shift=3.0, num_inference_steps=8, cfg_ratio=0.0, timesteps="discrete"),
    "base": VariantValues(shift=1.0, num_inference_steps=50, cfg_ratio=0.15, timesteps="logit_normal"),
    "sft": VariantValues(shift=1.0, num_inference_steps=50, cfg_ratio=0.15, timesteps="logit_normal"),
}


@dataclass(frozen=True)
class MusicSettings:
    """The values training and sampling use, after the variant's defaults are filled in."""

    variant: str  # as configured (may be a fine-tune's folder name)
    base_variant: str  # turbo / base / sft
    shift: float
    num_inference_steps: int
    cfg_ratio: float
    loss_weighting: str
    snr_gamma: float
    timesteps: str

    @property
    def is_turbo(self) -> bool:
        return self.base_variant == "turbo"


def music_settings(cfg) -> MusicSettings:
    """Effective music settings of a validated acestep config."""
    base = base_variant_of(cfg) or "turbo"
    values, loss = VARIANTS[base], cfg.loss
    gamma = (loss.snr_gamma or DEFAULT_SNR_GAMMA) if loss.loss_weighting == "min_snr" else 0.0
    return MusicSettings(
        variant=cfg.model.variant or "turbo", base_variant=base,
        shift=loss.shift if loss.shift is not None else values.shift,
        num_inference_steps=loss.num_inference_steps or values.num_inference_steps,
        cfg_ratio=loss.cfg_ratio if loss.cfg_ratio is not None else values.cfg_ratio,
        loss_weighting=loss.loss_weighting, snr_gamma=gamma, timesteps=values.timesteps)


def base_variant_of(cfg) -> str | None:
    """turbo / base / sft: the variant itself, `model.base_variant` for a fine-tune, or what the model's
    transformer config (or folder name) says; None when it cannot be told."""
    variant = cfg.model.variant or "turbo"
    if variant in MUSIC_VARIANTS:
        return variant
    if cfg.model.base_variant:
        return cfg.model.base_variant
    return detect_variant(cfg.model.path, variant)


def detect_variant(model_path: str, variant: str = "") -> str | None:
    """Read `is_turbo` / `model_version` from `transformer/config.json` of a local folder (or its
    `variant` sub-folder), else tell it from the variant's folder name (`acestep-v15-turbo`, ...)."""
    root = Path(model_path).expanduser() if model_path and not model_path.startswith("tiny:") else None
    for folder in ([root / variant, root] if root is not None and variant else [root] if root else []):
        config = folder / "transformer" / "config.json"
        if config.is_file():
            try:
                data = json.loads(config.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            version = str(data.get("model_version") or "").lower()
            if data.get("is_turbo") or "turbo" in version:
                return "turbo"
            for name in ("sft", "base"):
                if name in version:
                    return name
    found = [v for v in MUSIC_VARIANTS if v in variant.lower()]  # official folder names: acestep-v15-turbo
    return found[0] if len(found) == 1 else None


def music_problems(cfg) -> list[tuple[str, str]]:
    """Problems (field path, message) of an acestep config; notes for what is only unusual."""
    if cfg.model.family != "acestep":
        return []
    problems: list[tuple[str, str]] = []
    variant = cfg.model.variant or "turbo"
    base = base_variant_of(cfg)
    if base is None:
        return [("model.base_variant", f"model.variant '{variant}' is not turbo, base or sft and its "
                 "transformer config does not say which it was made from: set turbo, base or sft")]
    if variant in MUSIC_VARIANTS and cfg.model.base_variant and cfg.model.base_variant != variant:
        problems.append(("model.base_variant", f"'{cfg.model.base_variant}' contradicts model.variant "
                         f"'{variant}'; leave it empty for official variants"))
    problems += _variant_problems(cfg, base)
    _translate_target_names(cfg)
    _add_notes(cfg, base)
    return problems


def _variant_problems(cfg, base: str) -> list[tuple[str, str]]:
    loss, out = cfg.loss, []
    if base == "turbo":
        if loss.cfg_ratio:
            out.append(("loss.cfg_ratio", f"CFG dropout cannot be enabled for turbo ({TURBO_REASON}); "
                        "set 0 or leave empty"))
        if loss.loss_weighting != "none":
            out.append(("loss.loss_weighting", f"'{loss.loss_weighting}' is not available for turbo "
                        f"({TURBO_REASON}); use 'none'"))
        if loss.snr_gamma > 0:
            out.append(("loss.snr_gamma", f"min-SNR weighting is not available for turbo ({TURBO_REASON}); "
                        "set 0"))
    return out


def _translate_target_names(cfg) -> None:
    """ACE-Step's own projection names (FIELDS A08: q_proj k_proj v_proj o_proj) -> diffusers' names in
    AceStepTransformer1DModel (to_q, to_k, to_v, to_out.0); a pure alias, so the lists are rewritten."""
    a = cfg.adapter
    for field in ("target_modules", "self_target_modules", "cross_target_modules"):
        names = getattr(a, field)
        renamed = [_rename(n) for n in names]
        if renamed != names:
            setattr(a, field, renamed)
            cfg.notes.append(f"adapter.{field}: ACE-Step names {names} mapped to the diffusers layers "
                             f"{renamed}.")


def _rename(name: str) -> str:
    for original, diffusers in ATTENTION_ALIASES.items():
        if name == original or name.endswith("." + original):
            return name[: len(name) - len(original)] + diffusers
    return name


def _add_notes(cfg, base: str) -> None:
    s, values, notes = music_settings(cfg), VARIANTS[base], cfg.notes
    if (cfg.model.variant or "turbo") not in MUSIC_VARIANTS:
        notes.append(f"model.variant '{cfg.model.variant}' is trained as a {base} fine-tune.")
    if base == "turbo":
        notes.append(f"turbo: trained at its 8 inference timesteps, without CFG dropout or min-SNR "
                     f"(guidance-distilled). Samples: shift {s.shift:g}, {s.num_inference_steps} steps.")
    else:
        notes.append(f"{base}: logit-normal timesteps, CFG dropout {s.cfg_ratio:g}, loss weighting "
                     f"{s.loss_weighting}. Samples: shift {s.shift:g}, {s.num_inference_steps} steps.")
        if s.cfg_ratio == 0:
            notes.append(f"loss.cfg_ratio is 0: {base} was trained at 0.15; without it guidance may weaken.")
        if cfg.loss.snr_gamma > 0 and s.loss_weighting != "min_snr":
            notes.append("loss.snr_gamma only applies with loss.loss_weighting 'min_snr'; it is ignored.")
    for name, default in (("shift", values.shift), ("num_inference_steps", values.num_inference_steps)):
        value = getattr(s, name)
        if value != default:
            notes.append(f"loss.{name} {value:g} differs from {base}'s {default:g}; samples and the stored "
                         "inference settings use it.")
    chunk = cfg.data.chunk_seconds
    if 0 < chunk < CHUNK_WARN_SECONDS:
        notes.append(f"data.chunk_seconds {chunk} is below {CHUNK_WARN_SECONDS} s: windows this short can "
                     "hurt how well the model learns song structure.")
