"""Z-Image (Tongyi-MAI, `ZImagePipeline`): a single-stream DiT over Qwen3 caption features and 2x2 patches
of Flux-VAE latents, static schedule shift 3 (Turbo's scheduler). Its transformer takes lists (one latent
(C, 1, h, w) and one caption (T_i, D) per image), time as 1 - sigma, and predicts minus the velocity: the
pipeline negates it (`noise_pred = -noise_pred`), so `predict` does too and the shared loss is unchanged.

Captions have their own token counts (the pipeline keeps only real tokens), so they are stored padded to
`MAX_TOKENS` with their lengths, and cut back to them before the transformer sees them.
Files: the adapter in diffusers' layout (`load_lora_weights`), and the single file in the layout ComfyUI loads
(`diffusion_model.<original layer>.lora.down/lora.up.weight`, q / k / v fused into `attention.qkv`:
zimage_export.py), read back through the pipeline's `load_lora_weights` (diffusers' own Z-Image converter)."""
from __future__ import annotations

import torch

from studio.families.flow import FlowFamily
from studio.families.rng import on_device

MAX_TOKENS = 512  # the pipeline's default `max_sequence_length`


class ZImageFamily(FlowFamily):
    pipeline_class = "ZImagePipeline"
    transformer_class = "ZImageTransformer2DModel"
    text_parts = (("tokenizer", "AutoTokenizer", "text_encoder", "AutoModel"),)
    # Single file: `single_file_tensors` (the ComfyUI layout). The name also prefixes LyCORIS' own keys.
    kohya_prefixes = {"transformer": "diffusion_model"}
    architecture = "z-image"
    base_version = "z-image"

    def use_flash_attn(self) -> None:
        self.transformer.set_attention_backend("flash")  # its attention goes through diffusers' dispatcher

    def default_targets(self, component: str = "transformer") -> list[str]:
        # attention of the main layers and of the noise / caption refiners
        return ["attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0"]

    def single_file_tensors(self, handle, states: dict) -> dict[str, torch.Tensor]:
        """The ComfyUI file: original layer names, q / k / v fused, alpha / rank in up (zimage_export.py)."""
        from studio.adapters.writer import scaled_lora_layers
        from studio.families.zimage_export import comfy_tensors

        layers = scaled_lora_layers(handle, states, "the ComfyUI file for Z-Image")
        return comfy_tensors(layers.get("transformer", {}))

    def kohya_unsupported(self, component: str, modules: list[str]) -> str:
        from studio.families.zimage_export import unreadable

        bad = unreadable(modules)
        if not bad:
            return ""
        return (f"{len(bad)} adapted layers have no name in the ComfyUI layout diffusers reads back "
                f"(e.g. {', '.join(bad[:3])}); use adapter_model.safetensors")

    def prompt_embeds(self, pipe, captions: list[str], device) -> dict[str, torch.Tensor]:
        embeds, _ = pipe.encode_prompt(captions, device=device, do_classifier_free_guidance=False,
                                       max_sequence_length=MAX_TOKENS)  # list of (T_i, D)
        padded = torch.zeros(len(embeds), MAX_TOKENS, embeds[0].shape[-1], dtype=embeds[0].dtype, device=device)
        for i, e in enumerate(embeds):
            padded[i, : e.shape[0]] = e
        return {"prompt_embeds": padded, "prompt_lengths": torch.tensor([e.shape[0] for e in embeds])}

    def predict(self, transformer, noisy, sigmas, text, dtype):
        embeds = on_device(text["prompt_embeds"], self.device, dtype)
        captions = [embeds[i, : int(n)] for i, n in enumerate(text["prompt_lengths"])]
        latents = list(noisy.to(dtype).unsqueeze(2).unbind(0))  # (C, 1, h, w) each
        time = (1.0 - sigmas).to(dtype)  # the pipeline's (1000 - t) / 1000
        out = transformer(latents, time, captions, return_dict=False)[0]
        return -torch.stack([o.float() for o in out]).squeeze(2)

    def render(self, pipe, prompt, meta: dict, generator: torch.Generator):
        return pipe(prompt.prompt, negative_prompt=prompt.negative_prompt or None, height=meta["height"],
                    width=meta["width"], num_inference_steps=meta["steps"], guidance_scale=meta["guidance"],
                    generator=generator, max_sequence_length=MAX_TOKENS).images[0]
