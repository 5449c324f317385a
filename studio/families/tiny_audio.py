"""Tiny random ACE-Step 1.5 pipeline (AceStepPipeline), saved as a real diffusers folder.

Kept from the real model: 48 kHz stereo, VAE hop 1920 (25 latents per second), DiT input of
3 x latent dim (noisy latents + source latents + chunk mask), patch size 2, GQA attention and
a Qwen3 text encoder. Everything else is shrunk: latent dim 8 (real 64), widths 32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .tiny_tokenizers import write_qwen_tokenizer

SAMPLE_RATE = 48_000
DOWNSAMPLING = [2, 4, 4, 6, 10]  # product 1920 -> 25 latents per second, as ACE-Step 1.5
LATENT_DIM = 8
HIDDEN = 32
# GQA shapes shared by the text encoder, condition encoder and DiT: 4 query heads, 2 kv heads.
ATTN = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8)


def tiny_oobleck():
    """AutoencoderOobleck: the encoder emits mean+scale, so its width is 2 x latent dim."""
    from diffusers import AutoencoderOobleck

    torch.manual_seed(0)
    return AutoencoderOobleck(
        encoder_hidden_size=2 * LATENT_DIM, downsampling_ratios=DOWNSAMPLING,
        channel_multiples=[1, 1, 1, 1, 1], decoder_channels=8,
        decoder_input_channels=LATENT_DIM, audio_channels=2, sampling_rate=SAMPLE_RATE,
    )


def tiny_qwen3(vocab_size: int):
    """Qwen3Model (no LM head): the pipeline reads last_hidden_state and the input embeddings."""
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(
        vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
        num_hidden_layers=2, max_position_embeddings=2048, tie_word_embeddings=True, **ATTN,
    )
    torch.manual_seed(0)
    return Qwen3Model(config)


def tiny_dit():
    """AceStepTransformer1DModel, 2 layers (one sliding-window, one full attention)."""
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

    torch.manual_seed(0)
    return AceStepTransformer1DModel(
        hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
        in_channels=3 * LATENT_DIM, audio_acoustic_hidden_dim=LATENT_DIM, patch_size=2,
        sliding_window=16, is_turbo=True, model_version="turbo", **ATTN,
    )


def tiny_condition_encoder(vae):
    """Lyric + timbre encoders; its silence_latent is the VAE's encoding of silence, as the
    official converter stores (zeros would put the timbre encoder off-distribution)."""
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder

    torch.manual_seed(0)
    encoder = AceStepConditionEncoder(
        hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, text_hidden_dim=HIDDEN,
        timbre_hidden_dim=LATENT_DIM, num_lyric_encoder_hidden_layers=2,
        num_timbre_encoder_hidden_layers=2, sliding_window=16, **ATTN,
    )
    frame = encode_silence(vae)  # (1, LATENT_DIM)
    with torch.no_grad():
        # The buffer's length (15000 frames = 10 min) is fixed by the class; tile one frame.
        encoder.silence_latent.copy_(frame[:, None, :].expand_as(encoder.silence_latent))
    return encoder


def encode_silence(vae) -> torch.Tensor:
    """Mean VAE latent of 1 s of stereo silence, (1, LATENT_DIM).

    Computed on one thread: the conv reductions' order (so the float bits) depends on the
    thread count, and the weight files must be byte-identical on any machine setting.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            silence = torch.zeros(1, 2, SAMPLE_RATE)  # (B, channels, samples)
            return vae.encode(silence).latent_dist.mean.mean(dim=-1)
    finally:
        torch.set_num_threads(threads)


def write_acestep(out_dir: Path) -> None:
    """A folder that `AceStepPipeline.from_pretrained` loads (turbo variant, no audio-code
    tokenizer/detokenizer: those are optional and only used for cover-from-codes)."""
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer

    vocab_size = write_qwen_tokenizer(out_dir / "tokenizer")
    vae = tiny_oobleck()
    pipe = AceStepPipeline(
        vae=vae, text_encoder=tiny_qwen3(vocab_size),
        tokenizer=AutoTokenizer.from_pretrained(str(out_dir / "tokenizer")),
        transformer=tiny_dit(), condition_encoder=tiny_condition_encoder(vae),
        # ACE-Step feeds timesteps in [0, 1] and computes its own shifted sigmas (pipeline doc).
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
    )
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
