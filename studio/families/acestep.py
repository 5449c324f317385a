"""ACE-Step 1.5 (music): LoRA-style adapters on the DiT (`AceStepTransformer1DModel`) of a diffusers
`AceStepPipeline` folder, trained on preprocessed songs (`studio/data/audio_preprocess.py`).

Training objective, as ACE-Step's own trainer defines it per variant (Side-Step `fixed_lora_module.py` /
`timestep_sampling.py`, matching `modeling_acestep_v15_*.py`): flow matching with
    x_t = t * noise + (1 - t) * x_0,   target velocity v = noise - x_0,   t = r (no mean-flow)
  turbo     t drawn uniformly from the 8-step shift-3 inference schedule (the only timesteps it is
            sampled at); no null-condition dropout, no loss weighting (guidance-distilled).
  base/sft  t = sigmoid(N(-0.4, 1)) (logit-normal); the condition is replaced by the learned
            `null_condition_emb` with probability `loss.cfg_ratio` (0.15, as the base was trained);
            optional min-SNR weighting with SNR = ((1 - t) / t)^2.
The DiT always sees `context_latents` = [silence latents, chunk mask of ones] as in text2music inference.
`loss.shift` / `loss.num_inference_steps` are inference settings (samples, stored in the run).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from studio.config.sections.music import VARIANTS, music_settings
from studio.families.acestep_export import AceStepExportMixin
from studio.families.base import ModelFamily, Sample
from studio.families.rng import draw, on_device

log = logging.getLogger("studio.train")
# Continuous logit-normal timestep sampling of base/sft (ACE-Step's `timestep_mu` / `timestep_sigma`).
TIMESTEP_MU, TIMESTEP_SIGMA = -0.4, 1.0
TIMBRE_SECONDS = 30  # the pipeline feeds 30 s of silence latents to the timbre encoder without a reference


def flow_schedule(steps: int, shift: float) -> torch.Tensor:
    """ACE-Step's inference timesteps (AceStepPipeline._get_timestep_schedule): linspace(1, 0, steps + 1)
    shifted by t' = shift * t / (1 + (shift - 1) * t), terminal 0 dropped. (steps,) float32."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t[:-1]


# Turbo trains at exactly its 8 inference timesteps (shift 3): 1.0, 0.955, 0.9, 0.833, 0.75, 0.643, 0.5, 0.3.
TURBO_TIMESTEPS = flow_schedule(VARIANTS["turbo"].num_inference_steps, VARIANTS["turbo"].shift)


class AceStepFamily(AceStepExportMixin, ModelFamily):
    kind = "audio"

    # ---- loading ---------------------------------------------------------------------------
    def model_dir(self) -> str:
        """A local folder, `tiny:acestep`, a hub id, or a checkpoints folder holding `model.variant` as a
        sub-folder (e.g. `checkpoints/` + `acestep-v15-turbo`)."""
        from studio.families.paths import resolve_model_path

        path = resolve_model_path(self.cfg.model.path)
        sub = Path(path) / self.cfg.model.variant if self.cfg.model.variant else None
        if sub is not None and (sub / "model_index.json").is_file():
            return str(sub)
        return path

    def load_encoders(self) -> None:
        """VAE, text encoder, tokenizer and condition encoder: what preprocessing and sampling need."""
        from diffusers import AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
        from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
        from transformers import AutoModel, AutoTokenizer

        self.music = music_settings(self.cfg)
        path, kw = self.model_dir(), {"revision": self.cfg.model.revision or None}
        # fp32 audio codec: the cached latents are exact; the encoders run in the training dtype.
        self.vae = AutoencoderOobleck.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32, **kw)
        self.vae.enable_tiling()  # long songs are encoded in 30 s tiles with 2 s overlap
        self.tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
        self.text_encoder = AutoModel.from_pretrained(path, subfolder="text_encoder", dtype=self.dtype, **kw)
        self.condition_encoder = AceStepConditionEncoder.from_pretrained(path, subfolder="condition_encoder",
                                                                         torch_dtype=self.dtype, **kw)
        self.scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler", **kw)
        for module in (self.vae, self.text_encoder, self.condition_encoder):
            module.requires_grad_(False)
            module.eval()
        # Small frozen tensors the loss needs every step, kept on the device whatever is offloaded.
        encoder = self.condition_encoder
        self.silence_latent = encoder.silence_latent.detach().to(self.device, self.dtype)  # (1, S, D)
        self.null_condition = encoder.null_condition_emb.detach().to(self.device, self.dtype)  # (1, 1, H)
        self._place_encoders(on_device=True)

    def load(self) -> None:
        from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

        self.load_encoders()
        self.transformer = AceStepTransformer1DModel.from_pretrained(
            self.model_dir(), subfolder="transformer", torch_dtype=self.dtype,
            revision=self.cfg.model.revision or None)
        self.transformer.requires_grad_(False)
        self.transformer.to(self.device)
        self.check_variant()
        self.songs = self.eval_songs = None  # the song cache is refreshed by the first train_dataset()

    def refresh_songs(self) -> None:
        """Training reads cached songs only: new or changed songs are encoded now, unusable ones named."""
        from studio.data.audio_preprocess import refresh_song_cache, report_findings

        self.songs = refresh_song_cache(self.cfg, self)
        report_findings(self.songs, self.cfg.data.on_bad_file)
        if self.cfg.data.eval_path:
            self.eval_songs = refresh_song_cache(self.cfg, self, "eval")
            report_findings(self.eval_songs, self.cfg.data.on_bad_file)
        self._place_encoders(on_device=not self.cfg.memory.offload_encoder)

    def check_variant(self) -> None:
        """Warn when the checkpoint's own turbo flag contradicts the configured variant."""
        config = self.transformer.config
        is_turbo = bool(getattr(config, "is_turbo", False) or getattr(config, "model_version", None) == "turbo")
        if is_turbo != self.music.is_turbo:
            log.warning(
                "model.variant: the checkpoint says it is %s but the run trains it as %s; check model.variant "
                "/ model.base_variant", "turbo" if is_turbo else "not turbo", self.music.base_variant)

    def _place_encoders(self, on_device: bool) -> None:
        """VAE and text/condition encoders on the device (True) or in system RAM (`memory.offload_encoder`)."""
        self.encoders_on_device = on_device
        target = self.device if on_device else torch.device("cpu")
        for module in (self.vae, self.text_encoder, self.condition_encoder):
            module.to(target)

    def trainable_module(self) -> torch.nn.Module:
        return self.transformer

    def default_targets(self, component: str = "transformer") -> list[str]:
        return ["to_q", "to_k", "to_v", "to_out.0"]  # ACE-Step's q_proj, k_proj, v_proj, o_proj

    def adapter_components(self, text_encoders: bool = False) -> dict[str, torch.nn.Module]:
        return {"transformer": self.transformer}

    def attention_scopes(self) -> dict[str, str]:
        # AceStepTransformerBlock: `self_attn` over the music frames, `cross_attn` to text/lyrics/timbre
        return {"self": "self_attn", "cross": "cross_attn"}

    def estimate_candidates(self) -> list[str]:
        """Projections the estimate task ranks: attention (self and cross) and MLP of every DiT block."""
        names = ("to_q", "to_k", "to_v", "to_out.0", "gate_proj", "up_proj", "down_proj")
        return [n for n, m in self.transformer.named_modules()
                if isinstance(m, torch.nn.Linear) and n.startswith("layers.") and n.endswith(names)]

    # ---- audio in (preprocessing) ------------------------------------------------------------
    @property
    def latents_per_second(self) -> float:
        return self.vae.config.sampling_rate / math.prod(self.vae.config.downsampling_ratios)

    def audio_format(self):
        from studio.data.audio import AudioFormat

        data = self.cfg.data
        # The context silence latents cap a song's length (15000 frames = 10 min on ACE-Step 1.5).
        limit = self.silence_latent.shape[1] / self.latents_per_second
        max_seconds = min(data.max_duration, limit) if data.max_duration else limit
        return AudioFormat(sample_rate=int(self.vae.config.sampling_rate), channels=int(self.vae.config.audio_channels),
                           normalize=data.normalize, max_seconds=float(max_seconds), min_seconds=data.min_duration)

    def encoder_identity(self) -> str:
        from studio.data.manifest import sha256_text, stable_json

        root, ident = Path(self.model_dir()), {"path": self.model_dir(), "revision": self.cfg.model.revision}
        for sub in ("vae", "text_encoder", "tokenizer", "condition_encoder"):
            folder = root / sub
            if folder.is_dir():
                ident[sub] = sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file())
        return sha256_text(stable_json(ident))[:16]

    @torch.no_grad()
    def encode_song(self, audio: np.ndarray, caption: str, lyrics: str, meta: dict, seconds: float) -> dict:
        """(C, N) waveform at the model rate -> `target_latents` (T, D) and `encoder_hidden_states` (L, H)."""
        placed = self.encoders_on_device
        self._place_encoders(on_device=True)
        try:
            wave = torch.from_numpy(audio)[None].to(self.device, torch.float32)  # (1, C, N)
            latents = self.vae.encode(wave).latent_dist.mean[0].T  # (T, D): the mean, so the cache is exact
            states = self.encode_condition([caption], [lyrics], meta, seconds)[0]
        finally:
            self._place_encoders(placed)
        return {"target_latents": latents.float().cpu().contiguous(),
                "encoder_hidden_states": states.float().cpu().contiguous()}

    def encode_condition(self, captions: list[str], lyrics: list[str], meta: dict, seconds: float) -> list:
        """Text + lyrics through the text encoder (the pipeline's own prompt format), then the condition
        encoder with 30 s of silence as timbre reference; returns per song (L, H) without padding."""
        pipe = self.pipeline(transformer=None)
        text, text_mask, lyric, lyric_mask = pipe.encode_prompt(
            prompt=captions, lyrics=lyrics, device=self.device, vocal_language=meta.get("language") or "en",
            audio_duration=seconds, bpm=meta.get("bpm"), keyscale=meta.get("keyscale"),
            timesignature=meta.get("timesignature"))
        frames = math.ceil(TIMBRE_SECONDS * self.latents_per_second)
        timbre = self.condition_encoder.silence_latent[:, :frames].to(self.device, self.dtype)
        states, mask = self.condition_encoder(
            text_hidden_states=text.to(self.dtype), text_attention_mask=text_mask,
            lyric_hidden_states=lyric.to(self.dtype), lyric_attention_mask=lyric_mask,
            refer_audio_acoustic_hidden_states_packed=timbre.expand(len(captions), -1, -1),
            refer_audio_order_mask=torch.arange(len(captions), device=self.device))
        return [states[i][mask[i].bool()] for i in range(len(captions))]

    # ---- data --------------------------------------------------------------------------------
    def train_dataset(self, split: str = "train"):
        from studio.data.audio_preprocess import SongLatentDataset, split_keys

        if self.songs is None:
            self.refresh_songs()
        data, seed = self.cfg.data, self.cfg.training.seed
        chunk = round(data.chunk_seconds * self.latents_per_second)
        if split == "eval" and self.eval_songs is not None:
            return SongLatentDataset(self.eval_songs.root, self.eval_songs.keys, chunk, seed)
        keys = self.songs.keys[: data.max_samples] if data.max_samples else self.songs.keys
        train, held = split_keys(keys, 0.0 if self.eval_songs else data.eval_split_ratio, seed)
        if not train:
            raise ValueError(f"data.path: no usable songs in {data.path}")
        return SongLatentDataset(self.songs.root, train if split == "train" else held, chunk, seed)

    def collate(self, items: list[dict]) -> dict:
        from studio.data.audio_preprocess import collate_songs

        return collate_songs(items)

    # ---- training ------------------------------------------------------------------------------
    def context_latents(self, batch_size: int, frames: int) -> torch.Tensor:
        """(B, T, 2D): silence latents as source + a chunk mask of ones (generate everywhere), exactly as
        text2music inference builds it."""
        source = self.silence_latent[:, :frames].expand(batch_size, -1, -1)
        return torch.cat([source, torch.ones_like(source)], dim=-1)

    def sample_timesteps(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        ranks = {"generator": generator, "rank": self.rank, "world": self.world}  # global-batch draws
        if self.music.timesteps == "discrete":
            index = draw(torch.randint, 0, len(TURBO_TIMESTEPS), size=(batch_size,), **ranks)
            return TURBO_TIMESTEPS[index]
        return torch.sigmoid(draw(torch.randn, size=(batch_size,), **ranks) * TIMESTEP_SIGMA + TIMESTEP_MU)

    def loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        x0 = on_device(batch["target_latents"], self.device, self.dtype)  # (B, T, D)
        states = on_device(batch["encoder_hidden_states"], self.device, self.dtype)  # (B, L, H)
        bsz, frames = x0.shape[:2]
        # Every random draw comes from the CPU generator: identical on any device and after resume.
        if not self.music.is_turbo and self.music.cfg_ratio > 0:
            drop = on_device(draw(torch.rand, size=(bsz,), generator=generator, rank=self.rank, world=self.world)
                             < self.music.cfg_ratio, self.device)
            states = torch.where(drop[:, None, None], self.null_condition.expand_as(states), states)
        t = self.sample_timesteps(bsz, generator)
        noise = on_device(draw(torch.randn, size=x0.shape, generator=generator, rank=self.rank, world=self.world),
                          x0.device, x0.dtype)
        t_dev = on_device(t, self.device, self.dtype)
        xt = t_dev[:, None, None] * noise + (1.0 - t_dev[:, None, None]) * x0
        pred = self.transformer(hidden_states=xt, timestep=t_dev, timestep_r=t_dev, encoder_hidden_states=states,
                                context_latents=self.context_latents(bsz, frames)).sample
        per_item = F.mse_loss(pred.float(), (noise - x0).float(), reduction="none").mean(dim=(1, 2))  # (B,)
        if self.music.loss_weighting == "min_snr":
            # min(SNR, gamma) / SNR with SNR = ((1 - t) / t)^2 (arXiv 2303.09556, in ACE-Step's form)
            t_safe = t.clamp(1e-4, 1 - 1e-4).to(per_item)
            snr = (((1 - t_safe) / t_safe) ** 2).clamp(max=1e6)
            per_item = per_item * snr.clamp(max=self.music.snr_gamma) / snr.clamp(min=1e-6)
        return per_item.mean()

    # ---- sampling ------------------------------------------------------------------------------
    def pipeline(self, transformer="default"):
        from diffusers import AceStepPipeline

        pipe = AceStepPipeline(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                               transformer=self.transformer if transformer == "default" else transformer,
                               condition_encoder=self.condition_encoder, scheduler=self.scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def sample(self, prompts: list, step: int) -> list[Sample]:
        placed = self.encoders_on_device
        self._place_encoders(on_device=True)  # sampling encodes prompts and decodes audio on the device
        try:
            return [self._sample_one(p, step) for p in prompts]
        finally:
            self._place_encoders(placed)

    def _sample_one(self, p, step: int) -> Sample:
        sampling, music = self.cfg.sampling, self.music
        guidance = 1.0 if music.is_turbo else (p.guidance if p.guidance >= 0 else sampling.default_guidance)
        meta = {"prompt": p.prompt, "lyrics": p.lyrics, "seed": p.seed, "steps": p.steps or music.num_inference_steps,
                "shift": music.shift, "guidance": guidance, "duration_s": sampling.audio_seconds,
                "variant": music.variant, "base_variant": music.base_variant,
                "scheduler": type(self.scheduler).__name__, "step": step}
        audio = self.pipeline()(
            p.prompt, lyrics=p.lyrics, audio_duration=sampling.audio_seconds, num_inference_steps=meta["steps"],
            guidance_scale=guidance, shift=music.shift, generator=torch.Generator().manual_seed(p.seed)).audios
        meta["sample_rate"] = int(self.vae.config.sampling_rate)
        return Sample((audio[0].float().cpu().numpy(), meta["sample_rate"]), "audio", meta)
