"""Tiny random flow-matching image pipelines (SD3, Flux), saved as real diffusers folders.

Kept from the real models: 16-channel latents through an x8 VAE without quant convs, CLIP
(77 tokens) + T5 text encoders, SD3's CLIP-embeds-padded-to-T5-width joint attention, Flux's
2x2 latent packing (in_channels 64) and 3-axis RoPE. Widths are shrunk to a few dozen.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .tiny_image import TEXT_DIM, TEXT_DIM_2, tiny_clip_text, tiny_vae
from .tiny_tokenizers import write_clip_tokenizer, write_t5_tokenizer

# T5 width; SD3 pads the concatenated CLIP embeds (32 + 48) up to it, so it must be >= 80.
T5_DIM = 96

# stabilityai/stable-diffusion-3-medium-diffusers and black-forest-labs/FLUX.1-dev scheduler configs.
SD3_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)
FLUX_SCHEDULER = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
    max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
)


def tiny_t5(vocab_size: int):
    """T5 v1.1-style encoder (gated-gelu), 2 layers, 4 heads of 8."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size, d_model=T5_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
        is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return T5EncoderModel(config)


def flow_vae(scaling_factor: float, shift_factor: float):
    """16 latent channels, no quant convs, as the SD3/Flux VAEs."""
    return tiny_vae(
        latent_channels=16, scaling_factor=scaling_factor, shift_factor=shift_factor,
        use_quant_conv=False, use_post_quant_conv=False,
    )


def write_text_encoders(out_dir: Path, names: tuple[tuple[str, str], ...]) -> dict:
    """Write tokenizer folders and build their tiny text encoders, keyed as pipeline arguments.

    `names` holds (tokenizer folder, kind) pairs; kind is "clip" (CLIPTextModel), "clip_proj"
    (CLIPTextModelWithProjection), "clip_proj2" (the wider, "!"-padded bigG one) or "t5".
    """
    from transformers import CLIPTokenizer, T5TokenizerFast

    parts = {}
    for folder, kind in names:
        suffix = folder.removeprefix("tokenizer")
        if kind == "t5":
            size = write_t5_tokenizer(out_dir / folder)
            parts[folder] = T5TokenizerFast.from_pretrained(str(out_dir / folder))
            parts["text_encoder" + suffix] = tiny_t5(size)
            continue
        pad = "!" if kind == "clip_proj2" else "<|endoftext|>"  # OpenCLIP bigG pads with "!"
        size = write_clip_tokenizer(out_dir / folder, pad_token=pad)
        parts[folder] = CLIPTokenizer.from_pretrained(str(out_dir / folder))
        hidden = TEXT_DIM_2 if kind == "clip_proj2" else TEXT_DIM
        parts["text_encoder" + suffix] = tiny_clip_text(size, kind != "clip", hidden)
    return parts


def write_sd3(out_dir: Path) -> None:
    """A folder that `StableDiffusion3Pipeline.from_pretrained` loads (SD3-medium layout)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    parts = write_text_encoders(
        out_dir, (("tokenizer", "clip_proj"), ("tokenizer_2", "clip_proj2"), ("tokenizer_3", "t5")))
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
        joint_attention_dim=T5_DIM, pooled_projection_dim=TEXT_DIM + TEXT_DIM_2,
        pos_embed_max_size=64,  # 64 patches of 2 latents of 8 px: up to 1024 px images
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, vae=flow_vae(1.5305, 0.0609),
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER), **parts,
    )
    pipe.save_pretrained(str(out_dir), safe_serialization=True)


def write_flux(out_dir: Path) -> None:
    """A folder that `FluxPipeline.from_pretrained` loads (FLUX.1-dev layout: guidance embeds)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    parts = write_text_encoders(out_dir, (("tokenizer", "clip"), ("tokenizer_2", "t5")))
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=T5_DIM,
        pooled_projection_dim=TEXT_DIM,  # CLIP's pooled output, its hidden size
        guidance_embeds=True, axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
    )
    pipe = FluxPipeline(
        transformer=transformer, vae=flow_vae(0.3611, 0.1159),
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER), **parts,
    )
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
