"""FLUX.1 dev / schnell (`FluxPipeline`): CLIP-L pooled + T5 tokens, 16-channel latents packed 2x2 into
64-wide tokens with 3-axis position ids, the resolution-dependent shift of its pipeline (dev) and the
guidance embedding (dev: the distilled guidance value is an input of the transformer)."""
from __future__ import annotations

import torch

from studio.families.flow import FlowFamily
from studio.families.rng import on_device

MAX_T5_TOKENS = {"dev": 512, "schnell": 256}  # the pipeline's limits per variant


class FluxFamily(FlowFamily):
    pipeline_class = "FluxPipeline"
    transformer_class = "FluxTransformer2DModel"
    text_parts = (("tokenizer", "CLIPTokenizer", "text_encoder", "CLIPTextModel"),
                  ("tokenizer_2", "T5TokenizerFast", "text_encoder_2", "T5EncoderModel"))
    base_version = "flux1"

    def use_flash_attn(self) -> None:
        self.transformer.set_attention_backend("flash")  # its attention goes through diffusers' dispatcher

    @property
    def variant(self) -> str:
        """dev / schnell as configured; when empty, what the transformer is (a guidance embedding = dev)."""
        if self.cfg.model.variant:
            return self.cfg.model.variant
        transformer = getattr(self, "transformer", None)
        return "schnell" if transformer is not None and not transformer.config.guidance_embeds else "dev"

    @property
    def architecture(self) -> str:  # sai-model-spec id (ComfyUI / civitai)
        return f"flux-1-{self.variant}"

    @property
    def max_tokens(self) -> int:
        return MAX_T5_TOKENS[self.variant]

    def prompt_embeds(self, pipe, captions: list[str], device) -> dict[str, torch.Tensor]:
        # T5 tokens (B, T, D_t5) and CLIP-L's pooled output (B, 768 on the real model); text ids are zeros.
        embeds, pooled, _ = pipe.encode_prompt(captions, None, device=device, max_sequence_length=self.max_tokens)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def shift_mu(self, height: int, width: int) -> float | None:
        """Dev's scheduler shifts by image size: mu = `calculate_shift` of the image token count (the
        pipeline's own function and scheduler config), as at inference; a fixed `loss.flow_shift` wins."""
        config = self.noise_scheduler.config
        if self.cfg.loss.flow_shift or not config.use_dynamic_shifting:
            return super().shift_mu(height, width)
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        return calculate_shift((height // 2) * (width // 2), config.base_image_seq_len,
                               config.max_image_seq_len, config.base_shift, config.max_shift)

    def predict(self, transformer, noisy, sigmas, text, dtype):
        from diffusers import FluxPipeline

        b, c, h, w = noisy.shape
        packed = FluxPipeline._pack_latents(noisy.to(dtype), b, c, h, w)  # (B, h/2 * w/2, 4C)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, self.device, dtype)  # (h/2*w/2, 3)
        prompt = on_device(text["prompt_embeds"], self.device, dtype)
        txt_ids = torch.zeros(prompt.shape[1], 3, device=self.device, dtype=dtype)
        guidance = None
        if transformer.config.guidance_embeds:  # dev: the transformer scales it by 1000 itself
            guidance = torch.full((b,), float(self.cfg.loss.guidance), device=self.device, dtype=dtype)
        out = transformer(hidden_states=packed, timestep=sigmas.to(dtype), guidance=guidance,
                          pooled_projections=on_device(text["pooled_prompt_embeds"], self.device, dtype),
                          encoder_hidden_states=prompt, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        factor = 8  # any factor: `_unpack_latents` only divides the pixel size by it again
        return FluxPipeline._unpack_latents(out, h * factor, w * factor, factor)

    def render(self, pipe, prompt, meta: dict, generator: torch.Generator):
        return pipe(prompt.prompt, num_inference_steps=meta["steps"], guidance_scale=meta["guidance"],
                    width=meta["width"], height=meta["height"], generator=generator,
                    max_sequence_length=self.max_tokens).images[0]

