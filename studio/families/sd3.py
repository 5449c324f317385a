"""Stable Diffusion 3 / 3.5 (MMDiT, `StableDiffusion3Pipeline`): CLIP-L + CLIP-G + T5 text encoders,
16-channel latents in 2x2 patches, static schedule shift (the scheduler's `shift`, 3.0)."""
from __future__ import annotations

import torch

from studio.families.flow import FlowFamily
from studio.families.rng import on_device

MAX_T5_TOKENS = 256  # the pipeline's default `max_sequence_length`


class Sd3Family(FlowFamily):
    pipeline_class = "StableDiffusion3Pipeline"
    transformer_class = "SD3Transformer2DModel"
    text_parts = (("tokenizer", "CLIPTokenizer", "text_encoder", "CLIPTextModelWithProjection"),
                  ("tokenizer_2", "CLIPTokenizer", "text_encoder_2", "CLIPTextModelWithProjection"),
                  ("tokenizer_3", "T5TokenizerFast", "text_encoder_3", "T5EncoderModel"))
    architecture = "stable-diffusion-3-medium"  # sai-model-spec id (ComfyUI / civitai)
    base_version = "sd3"

    def prompt_embeds(self, pipe, captions: list[str], device) -> dict[str, torch.Tensor]:
        # CLIP-L and CLIP-G penultimate states side by side, padded to T5's width, then T5's tokens after
        # them: (B, 77 + T, D_t5); pooled: both CLIP projections (B, 768 + 1280 on the real model).
        embeds, _, pooled, _ = pipe.encode_prompt(captions, None, None, device=device,
                                                  do_classifier_free_guidance=False, max_sequence_length=MAX_T5_TOKENS)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def predict(self, transformer, noisy, sigmas, text, dtype):
        # SD3's transformer takes timesteps in [0, 1000] (the scheduler's sigma x num_train_timesteps), in
        # fp32 as its pipeline passes them (a bf16 timestep would round to steps of 4).
        timesteps = sigmas.float() * self.noise_scheduler.config.num_train_timesteps
        return transformer(hidden_states=noisy.to(dtype), timestep=timesteps,
                           encoder_hidden_states=on_device(text["prompt_embeds"], self.device, dtype),
                           pooled_projections=on_device(text["pooled_prompt_embeds"], self.device, dtype),
                           return_dict=False)[0]

    def render(self, pipe, prompt, meta: dict, generator: torch.Generator):
        return pipe(prompt.prompt, negative_prompt=prompt.negative_prompt or None,
                    num_inference_steps=meta["steps"], guidance_scale=meta["guidance"], width=meta["width"],
                    height=meta["height"], generator=generator, max_sequence_length=MAX_T5_TOKENS).images[0]
