"""Tiny random causal LM (Llama architecture) with its own ChatML tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from .tiny_tokenizers import write_chatml_tokenizer


def tiny_llama_config(vocab_size: int, tok):
    """Llama with grouped-query attention (4 heads, 2 kv heads) so GQA code paths run."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )


def write_causal_lm(out_dir: Path) -> None:
    """A folder that AutoTokenizer / AutoModelForCausalLM load; generation stops at <|im_end|>
    (end of an assistant turn) or <|endoftext|> (end of a document)."""
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    vocab_size = write_chatml_tokenizer(out_dir)
    tok = AutoTokenizer.from_pretrained(str(out_dir))
    config = tiny_llama_config(vocab_size, tok)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")],
    )
    model.save_pretrained(str(out_dir))
