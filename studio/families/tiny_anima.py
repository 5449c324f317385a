"""Tiny random Anima (CircleStone Labs' anime model on NVIDIA's Cosmos-Predict2 DiT), saved as a real diffusers
modular-pipeline folder (`AnimaModularPipeline`, `modular_model_index.json`).

Kept from the real model: a Qwen3 text encoder (last hidden state, padding zeroed) read through the LLM
adapter (`AnimaTextConditioner`: learned T5-token queries cross-attending to the Qwen3 states, padded to
512 tokens, the real length: the DiT's cross-attention reads the padding too), the Cosmos DiT with 2x2 patches and its padding-mask channel, the Qwen-Image VAE (16 channels,
x8, per-channel latent mean / std), a flow-matching Euler scheduler with shift 3. Widths are shrunk to a
few dozen.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .anima import portable_index
from .tiny_tokenizers import write_qwen_tokenizer, write_t5_tokenizer
from .tiny_zimage import tiny_qwen3

TEXT_EMBED = 32  # the conditioner's output width = the DiT's cross-attention input
# The scheduler Anima samples with: flow matching, shift 3 (the ComfyUI workflow's ModelSamplingAuraFlow 3.0).
ANIMA_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)


def tiny_qwen_vae():
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(0)
    return AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                  temperal_downsample=[False, True, True])


def write_anima(out_dir: Path) -> None:
    """A folder that `AnimaModularPipeline.from_pretrained(...).load_components()` loads."""
    from diffusers import (AnimaAutoBlocks, AnimaTextConditioner, CosmosTransformer3DModel,
                           FlowMatchEulerDiscreteScheduler)
    from transformers import Qwen2Tokenizer, T5TokenizerFast

    out_dir = Path(out_dir)
    qwen_vocab = write_qwen_tokenizer(out_dir / "tokenizer")
    t5_vocab = write_t5_tokenizer(out_dir / "t5_tokenizer")
    tokenizer = Qwen2Tokenizer.from_pretrained(str(out_dir / "tokenizer"))
    t5_tokenizer = T5TokenizerFast.from_pretrained(str(out_dir / "t5_tokenizer"))
    text_encoder = tiny_qwen3(qwen_vocab, tokenizer)
    torch.manual_seed(0)
    conditioner = AnimaTextConditioner(source_dim=text_encoder.config.hidden_size, target_dim=TEXT_EMBED,
                                       model_dim=TEXT_EMBED, num_layers=1, num_attention_heads=2,
                                       target_vocab_size=t5_vocab, min_sequence_length=512)  # as the real one
    torch.manual_seed(0)
    transformer = CosmosTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        text_embed_dim=TEXT_EMBED, adaln_lora_dim=8, max_size=(4, 64, 64), patch_size=(1, 2, 2),
        rope_scale=(1.0, 4.0, 4.0), concat_padding_mask=True, extra_pos_embed_type=None)
    pipe = AnimaAutoBlocks().init_pipeline()
    pipe.update_components(text_encoder=text_encoder, tokenizer=tokenizer, t5_tokenizer=t5_tokenizer,
                           text_conditioner=conditioner, transformer=transformer, vae=tiny_qwen_vae(),
                           scheduler=FlowMatchEulerDiscreteScheduler.from_config(ANIMA_SCHEDULER))
    pipe.save_pretrained(str(out_dir), safe_serialization=True, overwrite_modular_index=True)
    portable_index(out_dir / "modular_model_index.json", "tiny-anima")

