"""Rectified-flow image transformers (SD3, Flux): what both share. `sd3.py` and `flux.py` add their text
encoders, their transformer call and their shift.

Loss (SD3 paper, arXiv 2403.03206, as diffusers' `train_dreambooth_lora_sd3.py` / `_flux.py`): clean VAE
latents x0 and noise e give x_sigma = (1 - sigma) x0 + sigma e; the transformer predicts the velocity
e - x0. sigma is drawn by diffusers' `compute_density_for_timestep_sampling` (logit-normal, mode or
uniform), shifted with the scheduler's own `time_shift` (static shift for SD3, the resolution-dependent
one for Flux dev), and the squared error is weighted by `compute_loss_weighting_for_sd3`.
Every random draw comes from the CPU generator the trainer passes in (exact resume).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from studio.families.rng import draw, on_device
from studio.families.base import ModelFamily
from studio.families.flow_export import FlowExportMixin
from studio.families.image_family import ImageFamilyMixin
from studio.families.paths import resolve_model_path
from studio.families.quantize import diffusers_load_options, place_network


class FlowFamily(FlowExportMixin, ImageFamilyMixin, ModelFamily):
    kind = "image"
    pipeline_class = ""  # diffusers pipeline class name (StableDiffusion3Pipeline, FluxPipeline)
    transformer_class = ""  # diffusers transformer class name
    # (tokenizer folder, tokenizer class, encoder folder, encoder class) in pipeline order (transformers classes)
    text_parts: tuple[tuple[str, str, str, str], ...] = ()

    # ---- loading ----------------------------------------------------------------------------------
    def load(self) -> None:
        import transformers
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

        self.checked_model_path()
        path = self.parts_path()  # the folder or hub id of the VAE, text encoders, tokenizers and scheduler
        kw = {"revision": self.cfg.model.revision or None}
        weights = {"variant": self.cfg.model.weight_variant or None, **kw}
        self.noise_scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler", **kw)
        self.tokenizers, self.text_encoders = [], []
        for tok_dir, tok_cls, enc_dir, enc_cls in self.text_parts:
            (tok_src, tok_sub), (enc_src, enc_sub) = self.text_sources(path, tok_dir, enc_dir, enc_cls)
            self.tokenizers.append(getattr(transformers, tok_cls).from_pretrained(tok_src, subfolder=tok_sub, **kw))
            self.text_encoders.append(getattr(transformers, enc_cls).from_pretrained(
                enc_src, subfolder=enc_sub, dtype=self.dtype, **weights))
        self.vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=self.vae_dtype, **weights)
        self.transformer = self.load_transformer(weights, diffusers_load_options(self.cfg, self.device, self.dtype))
        for module in (self.vae, self.transformer, *self.text_encoders):
            module.requires_grad_(False)
            module.eval()
        place_network(self.transformer, self.device, self.dtype)
        from studio.data.image_cache import attach_image_cache

        # With a fresh cache the VAE and text encoders never run per step: they stay in CPU memory.
        self.cache = attach_image_cache(self)
        self.place_encoders(vae=not (self.cache and self.cache.serves_latents),
                            text=not (self.cache and self.cache.serves_text))

    def parts_path(self) -> str:
        """Where everything but the transformer loads from: `model.path` itself, or for a single transformer
        file `model.extras_path` (empty: the repository diffusers infers from the file)."""
        from studio.config.single_file import is_single_file
        from studio.families.single_file import extras_source

        path = resolve_model_path(self.cfg.model.path)
        return extras_source(self.cfg, path) if is_single_file(path) else path

    def load_transformer(self, weights: dict, options: dict) -> torch.nn.Module:
        """The trained network: `model.path`'s `transformer` sub-folder, or the single file read by
        diffusers' `from_single_file` (studio/families/single_file.py). `weights`: revision / variant;
        `options`: quantization and placement (studio/families/quantize.py)."""
        import diffusers

        from studio.config.single_file import is_single_file
        from studio.families.single_file import load_transformer

        path = resolve_model_path(self.cfg.model.path)
        if not is_single_file(path):
            return getattr(diffusers, self.transformer_class).from_pretrained(
                path, subfolder="transformer", torch_dtype=self.dtype, **weights, **options)
        model, _ = load_transformer(self.transformer_class, path, self.parts_path(), self.dtype, options,
                                    self.cfg.model.revision or None)
        return model

    def text_sources(self, path: str, tok_dir: str, enc_dir: str, enc_cls: str) -> tuple[tuple, tuple]:
        """Where one tokenizer and its text encoder load from, each as (folder or hub id, subfolder): the
        base's sub-folders, except a T5 given by `model.t5_model_path` (its own folder; the tokenizer stays
        the base folder's when that has one)."""
        t5 = self.cfg.model.t5_model_path.strip()
        if not t5 or enc_cls != "T5EncoderModel":
            return (path, tok_dir), (path, enc_dir)
        t5 = resolve_model_path(t5)
        base_tok = Path(path) / tok_dir
        keep_base_tok = base_tok.is_dir() or not Path(path).is_dir()  # a hub base: its tokenizer folder
        return ((path, tok_dir) if keep_base_tok else (t5, "")), (t5, "")

    def checked_model_path(self) -> str:
        """`model.path` resolved, after the folder checks of the config (a ValueError naming the field)."""
        from studio.config.sections.flow import model_folder_problems

        path = resolve_model_path(self.cfg.model.path)
        problems = model_folder_problems(self.cfg.model.family, path, self.cfg.model.variant,
                                         self.cfg.model.t5_model_path, self.cfg.model.extras_path)
        if problems:
            raise ValueError("; ".join(f"{field}: {msg}" for field, msg in problems))
        self.model_path = path
        return path

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def vae_dtype(self) -> torch.dtype:
        return torch.float32  # as diffusers' SD3 example: latents encoded in full precision

    def cache_identity(self, part: str) -> str:
        from studio.data.image_cache import LATENTS, model_identity

        folders = ("vae",) if part == LATENTS else tuple(enc for _, _, enc, _ in self.text_parts)
        identity = model_identity(self.cfg, self.parts_path(), folders)
        t5 = self.cfg.model.t5_model_path.strip()
        if part != LATENTS and t5:  # the T5 read from its own folder is part of what made the embeddings
            identity += "-t5-" + model_identity(self.cfg, resolve_model_path(t5), ("",))
        return identity

    def place_encoders(self, vae: bool, text: bool) -> None:
        self.encoders_on_device = (vae, text)
        self.vae.to(self.device if vae else "cpu")  # loaded in `vae_dtype`
        for encoder in self.text_encoders:
            encoder.to(self.device if text else "cpu", dtype=self.dtype)

    def trainable_module(self) -> torch.nn.Module:
        return self.transformer

    # ---- encoding (also used by the cache; dataset and batches: image_family.py) --------------------
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 16, H/8, W/8), shifted and scaled by the VAE's own factors."""
        pixels = pixels.to(self.vae.device, dtype=self.vae.dtype)
        dist = self.vae.encode(pixels).latent_dist
        if generator is None:
            latents = dist.mode()
        else:  # dist.sample(), the draw made for the global batch (the same split over any process count)
            eps = draw(torch.randn, size=dist.mean.shape, generator=generator, rank=self.rank, world=self.world)
            latents = dist.mean + dist.std * eps.to(dist.mean)
        shift = self.vae.config.shift_factor or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    @torch.no_grad()
    def encode_text(self, captions: list[str], encoders: list | None = None) -> dict[str, torch.Tensor]:
        """The pipeline's own `encode_prompt`: {"prompt_embeds": (B, T, D), "pooled_prompt_embeds": (B, P)}."""
        pipe = self.pipeline(text_encoders=encoders)
        device = next((encoders or self.text_encoders)[0].parameters()).device
        return self.prompt_embeds(pipe, list(captions), device)

    def prompt_embeds(self, pipe, captions: list[str], device) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ---- training ---------------------------------------------------------------------------------
    def loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

        latents = self.batch_latents(batch, generator, torch.float32)
        text = self.cached_text(batch)
        if not text:
            text = self.encode_text(batch["caption"])
        bsz, loss_cfg = latents.shape[0], self.cfg.loss
        # Drawn for the global batch, this rank's rows kept (studio/families/rng.py): N processes train as one.
        noise = on_device(draw(torch.randn, size=latents.shape, generator=generator, rank=self.rank, world=self.world),
                          latents.device, latents.dtype)
        u = compute_density_for_timestep_sampling(loss_cfg.weighting_scheme, bsz * self.world, loss_cfg.logit_mean,
                                                  loss_cfg.logit_std, loss_cfg.mode_scale, generator=generator)
        u = u[self.rank * bsz:(self.rank + 1) * bsz]
        sigmas = on_device(self.shift_sigmas(u, *latents.shape[-2:]), self.device)
        s = sigmas.view(-1, 1, 1, 1)
        noisy = (1.0 - s) * latents + s * noise  # rectified flow path (arXiv 2403.03206 eq. 11)
        pred = self.predict(self.transformer, noisy, sigmas, text, self.dtype).float()
        weights = compute_loss_weighting_for_sd3(loss_cfg.weighting_scheme, s)
        error = weights * (pred - (noise - latents)) ** 2
        mask = batch.get("loss_mask")
        if mask is None:
            return error.mean()
        mask = mask.to(error)  # alpha mask (B, 1, h, w): the visible latent cells only
        return (error * mask).sum() / (mask.sum() * error.shape[1]).clamp_min(1e-6)

    def shift_sigmas(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """sigma in (0, 1) from the drawn u, through the scheduler's `time_shift` with this family's mu."""
        mu = self.shift_mu(height, width)
        return u if mu is None else self.noise_scheduler.time_shift(mu, 1.0, u)

    def shift_mu(self, height: int, width: int) -> float | None:
        """log of the shift for an h x w latent (None = no shift). `loss.flow_shift` > 0 wins; else the
        scheduler's static shift (s*sigma / (1 + (s-1)*sigma) is `time_shift` at mu = log s)."""
        shift = self.cfg.loss.flow_shift or self.noise_scheduler.config.shift
        return None if shift == 1.0 else math.log(shift)

    def predict(self, transformer, noisy: torch.Tensor, sigmas: torch.Tensor, text: dict,
                dtype: torch.dtype) -> torch.Tensor:
        """Velocity (B, C, h, w) for noisy latents (B, C, h, w) at `sigmas` (B,)."""
        raise NotImplementedError

    # ---- sampling ---------------------------------------------------------------------------------
    def sampling_scheduler(self):
        from diffusers import FlowMatchEulerDiscreteScheduler

        shift = self.cfg.loss.flow_shift
        extra = {"shift": shift, "use_dynamic_shifting": False} if shift else {}
        return FlowMatchEulerDiscreteScheduler.from_config(self.noise_scheduler.config, **extra)

    def pipeline(self, components: dict | None = None, text_encoders: list | None = None):
        """The model's own diffusers pipeline over the loaded parts; `components` replaces networks by
        name (export checks, merged export), `text_encoders` the encoders."""
        import diffusers

        parts = {"transformer": self.transformer, "vae": self.vae, "scheduler": self.sampling_scheduler(),
                 **(components or {})}
        for (tok_dir, _, enc_dir, _), tok, enc in zip(self.text_parts, self.tokenizers,
                                                       text_encoders or self.text_encoders):
            parts[tok_dir], parts[enc_dir] = tok, enc
        pipe = getattr(diffusers, self.pipeline_class)(**parts)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sample_meta(self, pipe) -> dict:
        config = pipe.scheduler.config
        return {"shift": "resolution-dependent" if config.use_dynamic_shifting else config.shift}
