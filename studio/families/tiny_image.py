"""Tiny random image pipelines (SD1.5, SDXL), saved as real diffusers folders.

Shapes mirror the real models where the pipeline's arithmetic depends on them (VAE downsamples
by 8, 4 latent channels, CLIP max length 77, SDXL's text_time conditioning); widths and depths
are as small as the layers allow so a training step takes milliseconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .tiny_tokenizers import write_clip_tokenizer

# SD1.5's scheduler config (runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json);
# loaded with `from_config`, which keeps keys such as clip_sample that PNDM ignores but the
# trainer's DDPMScheduler reads from the same file.
SD15_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False,
    prediction_type="epsilon",
)

# SDXL base's scheduler config (stabilityai/stable-diffusion-xl-base-1.0).
SDXL_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, interpolation_type="linear", timestep_spacing="leading",
    use_karras_sigmas=False, prediction_type="epsilon", sample_max_value=1.0,
)

TEXT_DIM = 32  # hidden size of the (first) tiny CLIP text encoder
# SDXL's second encoder is wider than the first, as on the real model (768 vs 1280), so code
# that mixes the two up fails on the tiny model too.
TEXT_DIM_2 = 48
SDXL_TIME_EMBED_DIM = 8  # real SDXL: 256


def tiny_vae(latent_channels: int = 4, **kwargs):
    """AutoencoderKL with 4 blocks (3 downsamples -> vae_scale_factor 8) of 8..16 channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
        latent_channels=latent_channels, sample_size=64, **kwargs,
    )


def tiny_clip_text(vocab_size: int, with_projection: bool = False, hidden: int = TEXT_DIM):
    """A 2-layer CLIP text encoder; `with_projection` gives SDXL's (and SD3's) second kind."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        projection_dim=hidden, hidden_act="quick_gelu",
        # ids of our tokenizer's specials: the pooled output is taken at the eos position
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )
    torch.manual_seed(0)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config)


def tiny_unet(cross_attention_dim: int = TEXT_DIM, **extra):
    """UNet2DConditionModel: 2 levels (16, 32 channels), cross-attention at both + mid block.

    sample_size 8 latents -> a 64 px default image through the x8 VAE.
    """
    from diffusers import UNet2DConditionModel

    settings = dict(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        attention_head_dim=2, cross_attention_dim=cross_attention_dim,
    )
    settings.update(extra)
    torch.manual_seed(0)
    return UNet2DConditionModel(**settings)


def write_sd15(out_dir: Path) -> None:
    """A folder that `StableDiffusionPipeline.from_pretrained` loads (no safety checker)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    tok_dir = out_dir / "tokenizer"
    vocab_size = write_clip_tokenizer(tok_dir)
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=tiny_clip_text(vocab_size),
        tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir)),
        unet=tiny_unet(), scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out_dir), safe_serialization=True)


def write_sdxl(out_dir: Path) -> None:
    """A folder that `StableDiffusionXLPipeline.from_pretrained` loads.

    The UNet reads both encoders' hidden states concatenated (cross_attention_dim 32 + 48) and
    the "text_time" embedding of 6 size/crop ids plus encoder 2's pooled projection
    (projection_class_embeddings_input_dim = 6 * addition_time_embed_dim + projection_dim).
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    vocab_size = write_clip_tokenizer(out_dir / "tokenizer")
    write_clip_tokenizer(out_dir / "tokenizer_2", pad_token="!")  # as SDXL's OpenCLIP tokenizer
    unet = tiny_unet(
        cross_attention_dim=TEXT_DIM + TEXT_DIM_2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),  # SDXL: no attention at full res
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED_DIM + TEXT_DIM_2,
    )
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(scaling_factor=0.13025), unet=unet,
        text_encoder=tiny_clip_text(vocab_size),
        text_encoder_2=tiny_clip_text(vocab_size, with_projection=True, hidden=TEXT_DIM_2),
        tokenizer=CLIPTokenizer.from_pretrained(str(out_dir / "tokenizer")),
        tokenizer_2=CLIPTokenizer.from_pretrained(str(out_dir / "tokenizer_2")),
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    pipe.save_pretrained(str(out_dir), safe_serialization=True)


def write_tiny_clip(out_dir: Path) -> Path:
    """A tiny random CLIP (text + vision towers, tokenizer, image processor) that `CLIPModel` and
    `AutoProcessor.from_pretrained` load: the stand-in for a real CLIP in tests of the CLIP score."""
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer,
                              CLIPVisionConfig)

    out_dir = Path(out_dir)
    vocab_size = write_clip_tokenizer(out_dir)
    text = tiny_clip_text(vocab_size).config
    vision = CLIPVisionConfig(hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM, num_hidden_layers=2,
                              num_attention_heads=4, image_size=32, patch_size=8, hidden_act="quick_gelu")
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
              ).save_pretrained(str(out_dir), safe_serialization=True)
    size = {"shortest_edge": 32}
    CLIPProcessor(image_processor=CLIPImageProcessor(size=size, crop_size={"height": 32, "width": 32}),
                  tokenizer=CLIPTokenizer.from_pretrained(str(out_dir))).save_pretrained(str(out_dir))
    return out_dir
