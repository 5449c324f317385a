"""ACE-Step adapter files and their checks (the hooks `studio/adapters` calls; shape of `sd_export.py`).

Files of a run (LoRA on the PEFT backend):
  adapter_model.safetensors  diffusers layout (`transformer.layers.0.self_attn.to_q.lora_A.weight`), written
                             by `AceStepPipeline.save_lora_weights`, so `pipe.load_lora_weights(run_dir,
                             weight_name="adapter_model.safetensors")` loads it; adapter_config.json (PEFT)
  <job>_kohya.safetensors    the ComfyUI single file: ACE-Step 1.5's own LoRA layout
                             (`base_model.model.layers.0.self_attn.q_proj.lora_A.weight`), which ComfyUI maps
                             for ACE-Step 1.5 (comfy/lora.py, `ACEStep15`) and diffusers converts back
                             (`_convert_non_diffusers_ace_step_lora_to_diffusers`). Neither loader reads an
                             alpha from it (both apply scale 1), so PEFT's alpha / rank is folded into lora_B.
  inference_settings.json    variant, shift, inference steps and guidance to sample the adapter with
Only plain LoRA has that layout: DoRA, LoHa, LoKr, OFT and LyCORIS runs keep the PEFT/LyCORIS file only.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from studio.adapters.loader_warnings import capture_loader_warnings

log = logging.getLogger("studio.adapters")
# diffusers' AceStepTransformer1DModel names -> ACE-Step 1.5's original decoder names
_TO_ORIGINAL = {".to_q.": ".q_proj.", ".to_k.": ".k_proj.", ".to_v.": ".v_proj.", ".to_out.0.": ".o_proj."}
ORIGINAL_PREFIX = "base_model.model."
INFERENCE_FILE = "inference_settings.json"  # variant, shift, steps, guidance the adapter is meant for


def comfyui_state_dict(state_dict: dict[str, torch.Tensor], adapter_config) -> dict[str, torch.Tensor] | None:
    """PEFT LoRA keys of the DiT -> ACE-Step's original PEFT keys with the scale folded into lora_B;
    None (with the reason logged) when the adapter has no such layout."""
    cfg = adapter_config
    if type(cfg).__name__ != "LoraConfig" or getattr(cfg, "use_dora", False):
        log.info("no ComfyUI file: ACE-Step's single-file layout holds plain LoRA only")
        return None
    if getattr(cfg, "bias", "none") != "none" or cfg.rank_pattern or cfg.alpha_pattern:
        log.warning("no ComfyUI file: trained biases or per-layer ranks have no place in ACE-Step's layout")
        return None
    scale = cfg.lora_alpha / (math.sqrt(cfg.r) if cfg.use_rslora else cfg.r)
    out = {}
    for key, value in state_dict.items():
        name = key
        for diffusers_name, original in _TO_ORIGINAL.items():
            name = name.replace(diffusers_name, original)
        out[ORIGINAL_PREFIX + name] = value * scale if ".lora_B." in key else value
    return out


class AceStepExportMixin:
    lora_loader_name = "diffusers load_lora_weights"  # AceStepPipeline's LoRA loader mixin
    kohya_prefixes: dict[str, str] = {}  # the ComfyUI file is PEFT-shaped: written by save_adapter below

    def save_adapter(self, out_dir: Path, state_dict: dict[str, torch.Tensor], adapter_config, **_) -> None:
        from diffusers import AceStepPipeline

        from studio.adapters.formats import ADAPTER_FILE, atomic_save_file, kohya_file_name
        from studio.runfolder.atomic import atomic_write_text

        metadata = adapter_config.to_dict() if adapter_config is not None else None
        AceStepPipeline.save_lora_weights(str(out_dir), transformer_lora_layers=state_dict, weight_name=ADAPTER_FILE,
                                          transformer_lora_adapter_metadata=metadata)
        if adapter_config is None:
            return
        adapter_config.save_pretrained(str(out_dir))
        inference = self.inference_settings()
        atomic_write_text(Path(out_dir) / INFERENCE_FILE, json.dumps(inference, indent=2))
        comfy = comfyui_state_dict(state_dict, adapter_config)
        if comfy is not None:
            header = {"format": "pt", "modelspec.architecture": "ace-step-v1.5/lora", "studio_scale_folded": "1",
                      "ss_network_dim": str(adapter_config.r), "ss_network_alpha": str(adapter_config.lora_alpha),
                      **{f"ace_step_{k}": str(v) for k, v in inference.items()}}
            atomic_save_file(comfy, Path(out_dir) / kohya_file_name(self.cfg.job.name), header)

    def inference_settings(self) -> dict:
        """What the adapter should be sampled with (FIELDS L05/L06: stored for inference)."""
        music = self.music
        return {"variant": music.variant, "base_variant": music.base_variant, "shift": music.shift,
                "num_inference_steps": music.num_inference_steps,
                "guidance_scale": 1.0 if music.is_turbo else self.cfg.sampling.default_guidance}

    # ---- export checks ---------------------------------------------------------------------------
    def load_base_components(self, path: str | None = None) -> dict[str, torch.nn.Module]:
        from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

        src = path or self.model_dir()
        kw = {} if path else {"revision": self.cfg.model.revision or None}
        transformer = AceStepTransformer1DModel.from_pretrained(src, subfolder="transformer", torch_dtype=self.dtype,
                                                                **kw)
        transformer.requires_grad_(False)
        transformer.eval()
        return {"transformer": transformer.to(self.device)}

    def verification_inputs(self) -> dict:
        config = self.transformer.config
        gen = torch.Generator().manual_seed(20240601)
        width = config.encoder_hidden_size or config.hidden_size
        # (1, 16, D) noisy latents, (1, 6, H) condition states: a few frames suffice, fast on a CPU.
        return {"latents": torch.randn(1, 16, config.audio_acoustic_hidden_dim, generator=gen),
                "states": torch.randn(1, 6, width, generator=gen), "t": torch.tensor([0.6])}

    @torch.no_grad()
    def verification_forward(self, components: dict[str, torch.nn.Module], inputs: dict,
                             dtype: torch.dtype) -> torch.Tensor:
        """Velocity prediction (1, 16, D) of the DiT in `components` for the fixed input."""
        transformer = components.get("transformer", self.transformer)
        latents = inputs["latents"].to(self.device, dtype)
        t = inputs["t"].to(self.device, dtype)
        out = transformer(hidden_states=latents, timestep=t, timestep_r=t,
                          encoder_hidden_states=inputs["states"].to(self.device, dtype),
                          context_latents=self.context_latents(1, latents.shape[1])).sample
        return out.float().cpu()

    def load_lora_file(self, components: dict[str, torch.nn.Module], file: Path) -> list[str]:
        """`AceStepPipeline.load_lora_weights` on a pipeline around `components` (diffusers or ACE-Step keys)."""
        pipe = self.pipeline(transformer=components["transformer"])
        with capture_loader_warnings("diffusers") as messages:
            pipe.load_lora_weights(str(Path(file).parent), weight_name=Path(file).name, adapter_name="exported")
        return messages

    def save_merged(self, out_dir: Path, components: dict[str, torch.nn.Module]) -> None:
        self.pipeline(transformer=components["transformer"]).save_pretrained(str(out_dir), safe_serialization=True)

