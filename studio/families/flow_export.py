"""SD3 / Flux side of adapters: where they go, the files, and what export checks need.

Files: `adapter_model.safetensors` in diffusers' layout (`transformer.<module>.lora_A.weight`, written by the
pipeline's own `save_lora_weights`, loaded by its `load_lora_weights`), and the single file with
kohya-style keys `lora_transformer_<module path with _>.lora_down/lora_up/alpha`: OneTrainer's layout, which
ComfyUI maps for both models (comfy/lora.py `model_lora_keys_unet`, SD3 and Flux branches; Forge carries
the same table); LyCORIS types keep their own parameter names under the same prefix.
Diffusers reads that layout with the converter of its Flux loader (`_convert_kohya_flux_lora_to_diffusers`,
the `lora_transformer_` branch); its SD3 loader has no converter, so SD3 files are checked through that
same diffusers converter before `load_lora_weights`.

Mixed into `FlowFamily`; everything here reads the family's loaded parts.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from studio.adapters.loader_warnings import capture_loader_warnings

# Attention projections of both MMDiT streams (image: to_q/k/v, to_out.0; text: add_*_proj, to_add_out),
# as diffusers' SD3 / Flux LoRA examples. `attn.` keeps SD3.5's second image attention (`attn2`) out, whose
# kohya names diffusers cannot read back; on Flux the single-stream blocks' `attn.to_q/k/v` match too.
ATTENTION_TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                     "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"]
KOHYA_PREFIX = "lora_transformer"
# Module paths whose `lora_transformer_` keys diffusers' converter maps back (lora_conversion_utils.py
# `_convert_mixture_state_dict_to_diffusers`): block attention projections and the embedders / output.
KOHYA_READABLE = re.compile(
    r"(?:single_)?transformer_blocks\.\d+\.attn\.(?:to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)"
    r"|context_embedder|norm_out\.linear|proj_out|x_embedder"
    r"|time_text_embed\.(?:guidance|text|timestep)_embedder\.linear_\d")


class FlowExportMixin:
    lora_loader_name = "diffusers load_lora_weights"
    kohya_prefixes = {"transformer": KOHYA_PREFIX}
    architecture = ""  # sai-model-spec architecture id, set by each family
    base_version = ""  # kohya `ss_base_model_version`

    def default_targets(self, component: str = "transformer") -> list[str]:
        return list(ATTENTION_TARGETS)

    def adapter_components(self, text_encoders: bool = False) -> dict[str, torch.nn.Module]:
        return {"transformer": self.transformer}

    def kohya_metadata(self) -> dict[str, str]:
        res = self.cfg.data.resolution
        return {"ss_base_model_version": self.base_version, "modelspec.sai_model_spec": "1.0.0",
                "modelspec.architecture": f"{self.architecture}/lora", "modelspec.implementation": "diffusers",
                "modelspec.resolution": f"{res}x{res}", "modelspec.title": self.cfg.job.name or "adapter"}

    def kohya_unsupported(self, component: str, modules: list[str]) -> str:
        outside = [m for m in modules if not KOHYA_READABLE.fullmatch(m)]
        if not outside:
            return ""
        return (f"the lora_transformer_ single file is read back by diffusers only for attention projections "
                f"and embedders; {len(outside)} adapted layers are outside them (e.g. {', '.join(outside[:3])}). "
                "Use adapter_model.safetensors (diffusers' layout), or train with adapter.backend 'lycoris', "
                "whose single file carries every layer")

    def save_adapter(self, out_dir: Path, state_dict: dict[str, torch.Tensor], adapter_config) -> None:
        import diffusers

        cls = getattr(diffusers, self.pipeline_class)
        metadata = adapter_config.to_dict() if adapter_config is not None else None
        cls.save_lora_weights(str(out_dir), transformer_lora_layers=state_dict,
                              weight_name="adapter_model.safetensors", transformer_lora_adapter_metadata=metadata)
        if adapter_config is not None:
            adapter_config.save_pretrained(str(out_dir))

    # ---- export checks ----------------------------------------------------------------------------
    def load_base_components(self, path: str | None = None) -> dict[str, torch.nn.Module]:
        import diffusers

        from studio.families.quantize import diffusers_load_options, place_network

        if not path:  # the trained base, quantized as in training (model.quantization): like with like
            transformer = self.load_transformer(
                {"revision": self.cfg.model.revision or None, "variant": self.cfg.model.weight_variant or None},
                diffusers_load_options(self.cfg, self.device, self.dtype))
        else:  # a merged folder the studio wrote
            transformer = getattr(diffusers, self.transformer_class).from_pretrained(
                str(path), subfolder="transformer", torch_dtype=self.dtype)
        transformer.requires_grad_(False)
        transformer.eval()
        place_network(transformer, self.device, self.dtype)
        return {"transformer": transformer}

    def verification_inputs(self) -> dict:
        gen = torch.Generator().manual_seed(20240601)
        # (1, C, 8, 8) latents: 16 tokens of 2x2 patches, small enough for any tiny model, fast on a CPU.
        latents = torch.randn(1, self.latent_channels, 8, 8, generator=gen)
        return {"latents": latents, "sigma": torch.tensor([0.6]), "caption": ["a photo of a red fox, studio light"]}

    @torch.no_grad()
    def verification_forward(self, components: dict[str, torch.nn.Module], inputs: dict,
                             dtype: torch.dtype) -> torch.Tensor:
        """Velocity (1, C, 8, 8) of `components`' transformer for the fixed latents, sigma and caption."""
        with self.encoders_placed(vae=False):
            text = self.encode_text(inputs["caption"])
        transformer = components.get("transformer", self.transformer)
        latents = inputs["latents"].to(self.device, dtype)
        out = self.predict(transformer, latents, inputs["sigma"].to(self.device), text, dtype)
        return out.float().cpu()

    def load_lora_file(self, components: dict[str, torch.nn.Module], file: Path) -> list[str]:
        """The pipeline's `load_lora_weights` on `components`; a kohya-keyed file goes through diffusers'
        converter of that layout first where the pipeline's loader has none (SD3)."""
        from studio.adapters.formats import read_safetensors

        pipe = self.pipeline(components)
        file = Path(file)
        with capture_loader_warnings("diffusers", "transformers") as messages:
            weights, _ = read_safetensors(file)
            if self.pipeline_class != "FluxPipeline" and any(k.endswith(".lora_down.weight") for k in weights):
                from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

                pipe.load_lora_weights(_convert_kohya_flux_lora_to_diffusers(weights), adapter_name="exported")
            else:
                pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name="exported")
        return messages

    def save_merged(self, out_dir: Path, components: dict[str, torch.nn.Module]) -> None:
        self.pipeline(components).save_pretrained(str(out_dir), safe_serialization=True)
