"""GGUF export of a merged language model (seed 003): written with llama.cpp's `gguf` package and read
back by transformers (`from_pretrained(..., gguf_file=...)`), which must give the merged model's token ids
and logits."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_studio
from tests.llm.conftest import train_in_process

CHAT = "<|im_start|>user\nWhat colour is the sky in 2024?<|im_end|>\n<|im_start|>assistant\nBlue, 12345 times."


def _variant(tiny_llm, folder, change) -> object:
    """A copy of the tiny model with `change(model)` applied (under no_grad), tokenizer included."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm))
    with torch.no_grad():
        change(model)
    model.save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_llm / name).read_bytes())
    return folder


def _sharp_attention(model) -> None:
    """Random init leaves attention near uniform, where a wrong q/k row order would hardly show: sharpen it."""
    for layer in model.model.layers:
        layer.self_attn.q_proj.weight.mul_(30)
        layer.self_attn.k_proj.weight.mul_(30)


@pytest.fixture(scope="module")
def sharp_llm(tiny_llm, tmp_path_factory):
    return _variant(tiny_llm, tmp_path_factory.mktemp("sharp-llm"), _sharp_attention)


@pytest.mark.parametrize("gguf_type", ["f32", "f16", "bf16"])
def test_the_tiny_llama_round_trips_through_gguf(sharp_llm, tmp_path, gguf_type):
    from studio.families.causal_lm_gguf import check_gguf, write_gguf

    path = write_gguf(sharp_llm, tmp_path / f"tiny-{gguf_type}.gguf", gguf_type)
    check = check_gguf(sharp_llm, path, gguf_type, CHAT)
    assert check["same_tokens"], "the vocabulary (tokens, merges, special tokens) did not come back"
    assert check["max_abs_diff"] < 1e-4, check  # the same (rounded) weights, in llama.cpp's layout and back
    assert check["ok"], check


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    """A tiny Qwen2 (attention biases, Qwen's own pre-split, no rotary permutation in llama.cpp)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from studio.families.tiny_tokenizers import write_qwen_tokenizer

    out = tmp_path_factory.mktemp("tiny-qwen2")
    vocab = write_qwen_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(str(out))
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                         tie_word_embeddings=False, eos_token_id=tok.eos_token_id))
    with torch.no_grad():
        _sharp_attention(model)
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_()
            layer.self_attn.k_proj.bias.normal_()
    model.save_pretrained(str(out))
    return out


def test_a_tiny_qwen2_round_trips_through_gguf(tiny_qwen2, tmp_path):
    from studio.families.causal_lm_gguf import check_gguf, write_gguf

    check = check_gguf(tiny_qwen2, write_gguf(tiny_qwen2, tmp_path / "qwen2.gguf", "f16"), "f16", CHAT)
    assert check["same_tokens"] and check["max_abs_diff"] < 1e-4 and check["ok"], check


def test_the_check_fails_when_the_weights_differ(sharp_llm, tmp_path):
    """The check compares for real: a GGUF of another model (one attention's keys changed) does not pass."""
    from studio.families.causal_lm_gguf import check_gguf, write_gguf

    def changed(model):
        model.model.layers[0].self_attn.k_proj.weight.mul_(-1)

    other = _variant(sharp_llm, tmp_path / "other", changed)
    check = check_gguf(sharp_llm, write_gguf(other, tmp_path / "other.gguf", "f32"), "f32", CHAT)
    assert check["same_tokens"] and not check["ok"] and check["max_abs_diff"] > 1e-3


def test_what_cannot_be_written_is_refused_by_name(tmp_path, tiny_llm):
    from studio.families.causal_lm_gguf import GgufUnsupported, write_gguf

    with pytest.raises(GgufUnsupported, match="q4"):
        write_gguf(tiny_llm, tmp_path / "x.gguf", "q4")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"architectures": ["GPTNeoXForCausalLM"]}))
    with pytest.raises(GgufUnsupported, match="GPTNeoXForCausalLM"):
        write_gguf(odd, tmp_path / "y.gguf")


@pytest.mark.slow
def test_a_trained_run_exports_to_gguf_from_the_command_line(tmp_path, tiny_llm):
    run_dir = tmp_path / "run"
    train_in_process(run_dir, ["training.max_steps=4", "sampling.prompts=[]", "sampling.at_end=false",
                               "checkpointing.save_strategy=no"])
    assert not (run_dir / "merged").exists()  # the export merges first
    result = run_studio("export", str(run_dir), "--format", "gguf", "--out", str(tmp_path / "run.gguf"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "matches the merged model" in result.stdout and (tmp_path / "run.gguf").is_file()
    assert not list(run_dir.glob(".gguf-*"))  # the scratch merge is gone
