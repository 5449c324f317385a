"""Tiny random Z-Image (Tongyi's single-stream DiT, `ZImagePipeline`), saved as a real diffusers folder.

Kept from the real model (Tongyi-MAI/Z-Image-Turbo): a Qwen3 text encoder read through a chat template
(its second-to-last hidden state per real token), 16-channel latents of the Flux VAE in 2x2 patches,
noise and caption refiner blocks before the main layers, 3-axis RoPE, a static schedule shift of 3.
Widths are shrunk to a few dozen.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .tiny_flow import flow_vae
from .tiny_tokenizers import write_chatml_tokenizer

TEXT_HIDDEN = 32  # the Qwen3 width = the transformer's caption feature size
# Tongyi-MAI/Z-Image-Turbo's scheduler config.
ZIMAGE_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)


def tiny_qwen3(vocab_size: int, tok):
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    return Qwen3Model(config)


def write_zimage(out_dir: Path) -> None:
    """A folder that `ZImagePipeline.from_pretrained` loads."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import AutoTokenizer

    vocab_size = write_chatml_tokenizer(out_dir / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir / "tokenizer"))
    text_encoder = tiny_qwen3(vocab_size, tokenizer)
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, cap_feat_dim=TEXT_HIDDEN,
        axes_dims=[8, 12, 12], axes_lens=[1024, 512, 512])  # head dim 32 split over 3 axes; the real RoPE tables
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(ZIMAGE_SCHEDULER),
                          vae=flow_vae(0.3611, 0.1159), text_encoder=text_encoder, tokenizer=tokenizer,
                          transformer=transformer)
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
