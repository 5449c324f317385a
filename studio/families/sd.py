"""SD 1.5 and SDXL (UNet latent diffusion), trained the way diffusers' `train_text_to_image_lora*.py` do.

Loss: epsilon or v-prediction MSE on noised VAE latents, optional min-SNR-gamma weighting
(arXiv 2303.09556, as in diffusers' examples via `compute_snr`) and noise offset.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from studio.families.base import ModelFamily
from studio.families.image_family import ImageFamilyMixin
from studio.families.rng import draw, on_device
from studio.families.paths import resolve_model_path
from studio.families.quantize import diffusers_load_options, place_network, quantized
from studio.families.sd_export import SdExportMixin


class SdFamily(SdExportMixin, ImageFamilyMixin, ModelFamily):  # data hooks: image_family.py
    kind = "image"

    @property
    def is_xl(self) -> bool:
        return self.cfg.model.family == "sdxl"

    # ---- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        path = resolve_model_path(self.cfg.model.path)
        self.model_path = path
        if path.endswith(".safetensors"):
            self._load_single_file(path)
        else:
            kw = {"revision": self.cfg.model.revision or None}
            variant = self.cfg.model.weight_variant or None
            self.noise_scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", **kw)
            self.tokenizers = [CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)]
            self.text_encoders = [CLIPTextModel.from_pretrained(path, subfolder="text_encoder", variant=variant, **kw)]
            if self.is_xl:
                self.tokenizers.append(CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", **kw))
                self.text_encoders.append(CLIPTextModelWithProjection.from_pretrained(
                    path, subfolder="text_encoder_2", variant=variant, **kw))
            self.vae = AutoencoderKL.from_pretrained(path, subfolder="vae", variant=variant, **kw)
            self.unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", variant=variant, **kw,
                                                             torch_dtype=self.dtype,
                                                             **diffusers_load_options(self.cfg, self.device, self.dtype))
        if self.cfg.model.prediction_type != "auto":
            self.noise_scheduler.register_to_config(prediction_type=self.cfg.model.prediction_type)
        for module in (self.vae, self.unet, *self.text_encoders):
            module.requires_grad_(False)
            module.eval()
        place_network(self.unet, self.device, self.dtype)
        from studio.data.image_cache import attach_image_cache

        # With a fresh cache the VAE and text encoders never run per step: they stay in CPU memory.
        self.cache = attach_image_cache(self)
        self.place_encoders(vae=not (self.cache and self.cache.serves_latents),
                            text=not (self.cache and self.cache.serves_text))

    @property
    def vae_dtype(self) -> torch.dtype:
        # The SDXL VAE overflows in fp16 (diffusers keeps it in fp32 too), so only the rest is cast;
        # memory.no_half_vae does the same for SD 1.5.
        return torch.float32 if self.is_xl or self.cfg.memory.no_half_vae else self.dtype

    def cache_identity(self, part: str) -> str:
        from studio.data.image_cache import LATENTS, model_identity

        # SD 1.5 names the (absent) second encoder too: its identity stays what existing caches recorded.
        folders = ("vae",) if part == LATENTS else ("text_encoder", "text_encoder_2")
        return model_identity(self.cfg, resolve_model_path(self.cfg.model.path), folders)

    def place_encoders(self, vae: bool, text: bool) -> None:
        """Move the VAE / text encoders to the device (True) or keep them in CPU memory (False)."""
        self.encoders_on_device = (vae, text)
        self.vae.to(self.device if vae else "cpu", dtype=self.vae_dtype)
        for te in self.text_encoders:
            te.to(self.device if text else "cpu", dtype=self.dtype)

    def _load_single_file(self, path: str) -> None:
        from diffusers import DDPMScheduler

        if quantized(self.cfg):
            raise ValueError("model.quantization: a single .safetensors checkpoint loads as a whole pipeline, "
                             "which is not quantized here; convert it to a diffusers folder first "
                             "(pipe.save_pretrained) or load full weights")
        pipe = self._single_file_pipeline(path, torch.float32)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if self.is_xl else [])
        self.text_encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if self.is_xl else [])
        self.vae, self.unet = pipe.vae, pipe.unet

    def trainable_module(self) -> torch.nn.Module:
        return self.unet

    # ---- encoding (also used by the cache) ---------------------------------------------------
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8)."""
        pixels = pixels.to(self.device, dtype=self.vae.dtype)
        dist = self.vae.encode(pixels).latent_dist
        if generator is None:
            latents = dist.mode()
        else:  # dist.sample(), with the draw made for the global batch (the same split over any process count)
            eps = draw(torch.randn, size=dist.mean.shape, generator=generator, rank=self.rank, world=self.world)
            latents = dist.mean + dist.std * eps.to(dist.mean)
        return latents * self.vae.config.scaling_factor

    @torch.no_grad()
    def encode_text(self, captions: list[str], encoders: list | None = None) -> dict[str, torch.Tensor]:
        return self._encode_text(captions, encoders)

    def _encode_text(self, captions: list[str], encoders: list | None = None) -> dict[str, torch.Tensor]:
        """SD: last hidden state (B, 77, D). SDXL: both encoders' penultimate states concatenated
        (B, 77, D1+D2) plus the second encoder's pooled projection (B, P), as in diffusers' SDXL example.
        With gradients (the text-encoder adapter trains through this); `encode_text` is the no-grad one."""
        embeds, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, encoders or self.text_encoders):
            ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids.to(encoder.device)
            out = encoder(ids, output_hidden_states=self.is_xl)
            if self.is_xl:
                embeds.append(out.hidden_states[-2])
                pooled = out[0]  # text_embeds of CLIPTextModelWithProjection (last encoder wins)
            else:
                embeds.append(out[0])
        result = {"prompt_embeds": torch.cat(embeds, dim=-1)}
        if self.is_xl:
            result["pooled_prompt_embeds"] = pooled
        return result

    # ---- training ------------------------------------------------------------------------------
    def loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        latents = self.batch_latents(batch, generator, self.dtype)
        text = self.cached_text(batch)
        if self.cfg.adapter.train_text_encoder:  # the text-encoder adapter learns: encode with gradients
            text = self._encode_text(batch["caption"])
        elif not text:
            text = self.encode_text(batch["caption"])
        bsz = latents.shape[0]
        # Noise and timesteps are drawn on the CPU generator: identical on every device and on resume.
        ranks = {"generator": generator, "rank": self.rank, "world": self.world}  # global-batch draws
        noise = on_device(draw(torch.randn, size=latents.shape, **ranks), latents.device, latents.dtype)
        if self.cfg.loss.noise_offset > 0:  # https://www.crosslabs.org/blog/diffusion-with-offset-noise
            offset = on_device(draw(torch.randn, size=(bsz, latents.shape[1], 1, 1), **ranks), latents.device,
                               latents.dtype)
            noise = noise + self.cfg.loss.noise_offset * offset
        timesteps = on_device(draw(torch.randint, 0, self.noise_scheduler.config.num_train_timesteps, size=(bsz,),
                                   **ranks), self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        pred = self.unet(noisy, timesteps, on_device(text["prompt_embeds"], self.device, self.dtype),
                         added_cond_kwargs=self._added_cond(batch, text, bsz)).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        return self._weighted_mse(pred.float(), target.float(), timesteps, batch.get("loss_mask"))

    def _added_cond(self, batch: dict, text: dict, bsz: int, dtype: torch.dtype | None = None) -> dict | None:
        if not self.is_xl:
            return None
        dtype = dtype or self.dtype
        res = self.cfg.data.resolution
        original = batch.get("original_size", torch.tensor([[res, res]] * bsz))
        crop = batch.get("crop_top_left", torch.zeros(bsz, 2, dtype=torch.long))
        target = batch.get("target_size", torch.tensor([[res, res]] * bsz))  # (B, 2) bucket (h, w)
        # (B, 6): original size, crop top-left, target size, as SDXL's micro-conditioning expects.
        time_ids = on_device(torch.cat([original, crop, target], dim=1), self.device, dtype)
        return {"text_embeds": on_device(text["pooled_prompt_embeds"], self.device, dtype), "time_ids": time_ids}

    def _weighted_mse(self, pred, target, timesteps, mask=None) -> torch.Tensor:
        gamma = self.cfg.loss.snr_gamma
        if gamma <= 0 and mask is None:
            return F.mse_loss(pred, target, reduction="mean")
        dims = list(range(1, pred.ndim))
        if mask is None:
            loss = F.mse_loss(pred, target, reduction="none").mean(dim=dims)
        else:  # alpha mask (B, 1, h, w): average over the visible latent cells only
            mask = mask.to(pred)
            covered = (mask.sum(dim=dims) * pred.shape[1]).clamp_min(1e-6)
            loss = (F.mse_loss(pred, target, reduction="none") * mask).sum(dim=dims) / covered
        if gamma <= 0:
            return loss.mean()
        from diffusers.training_utils import compute_snr

        from studio.families.snr_weighting import snr_loss_weights

        snr = compute_snr(self.noise_scheduler, timesteps)
        weights = snr_loss_weights(snr, gamma, self.noise_scheduler.config.prediction_type,
                                   soft=self.cfg.loss.use_soft_min_snr)
        return (loss * weights).mean()

    # ---- sampling and export ---------------------------------------------------------------
    def pipeline(self, components: dict | None = None):
        """The family's pipeline; `components` replaces networks by name (export checks, merged export)."""
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

        nets = {"unet": self.unet, "text_encoder": self.text_encoders[0], **(components or {})}
        scheduler = EulerDiscreteScheduler.from_config(self.noise_scheduler.config)
        parts = dict(vae=self.vae, unet=nets["unet"], scheduler=scheduler, text_encoder=nets["text_encoder"],
                     tokenizer=self.tokenizers[0])
        if self.is_xl:
            pipe = StableDiffusionXLPipeline(text_encoder_2=nets.get("text_encoder_2", self.text_encoders[1]),
                                             tokenizer_2=self.tokenizers[1], **parts)
        else:
            pipe = StableDiffusionPipeline(safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False, **parts)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def render(self, pipe, prompt, meta: dict, generator: torch.Generator):
        """One sample image (`sample` itself is in image_family.py)."""
        return pipe(prompt.prompt, negative_prompt=prompt.negative_prompt or None, num_inference_steps=meta["steps"],
                    guidance_scale=meta["guidance"], width=meta["width"], height=meta["height"],
                    generator=generator).images[0]

    def save_adapter(self, out_dir: Path, state_dict: dict[str, torch.Tensor], adapter_config,
                     text_encoder_states: dict | None = None) -> None:
        """`text_encoder_states`: {"text_encoder"[, "text_encoder_2"]: (state dict, PEFT config)}."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        cls = StableDiffusionXLPipeline if self.is_xl else StableDiffusionPipeline
        metadata = adapter_config.to_dict() if adapter_config is not None else None
        extra = {}
        for name, (weights, config) in (text_encoder_states or {}).items():
            extra[f"{name}_lora_layers"], extra[f"{name}_lora_adapter_metadata"] = weights, config.to_dict()
        cls.save_lora_weights(str(out_dir), unet_lora_layers=state_dict, weight_name="adapter_model.safetensors",
                              unet_lora_adapter_metadata=metadata, **extra)
        if adapter_config is not None:
            adapter_config.save_pretrained(str(out_dir))
