"""The `adapter` section: backend rule, invalid combinations and the strict `network_args` parser."""
from __future__ import annotations

import pytest

from studio.config import ConfigError, load_config

BASE = {"model": {"family": "sd15", "path": "tiny:sd15"}, "data": {"path": "demo:images"}}


def cfg(**adapter):
    return load_config({**BASE, "adapter": adapter})


def problems(**adapter) -> str:
    with pytest.raises(ConfigError) as err:
        cfg(**adapter)
    return str(err.value)


@pytest.mark.parametrize("kind,sd_backend,llm_backend", [
    ("lora", "peft", "peft"), ("dora", "peft", "peft"), ("loha", "peft", "peft"), ("lokr", "peft", "peft"),
    ("oft", "lycoris", "peft"), ("boft", "lycoris", "peft"), ("ia3", "lycoris", "peft"),
    ("locon", "lycoris", "lycoris"), ("glora", "lycoris", "lycoris"), ("dylora", "lycoris", "lycoris"),
    ("full", "lycoris", "lycoris")])
def test_auto_backend_is_the_one_whose_files_the_family_loads(kind, sd_backend, llm_backend):
    """PEFT where it has the method, except on SD for the types whose PEFT weights have no kohya form:
    LyCORIS writes the ComfyUI file for them."""
    assert cfg(type=kind).adapter.backend_for("sd15") == sd_backend
    assert cfg(type=kind).adapter.backend_for("causal_lm") == llm_backend


@pytest.mark.parametrize("text", ["__import__('os').system('rm -rf /')", "a==b", "rank=", "x", "=3",
                                  "constraint=1e-3;echo", "block_size=(1,2)"])
def test_bad_network_args_are_refused_with_a_clear_message(text):
    message = problems(type="locon", network_args=text)
    assert "adapter.network_args" in message and ("key=value" in message or "bad value" in message)


def test_network_args_keys_are_checked_per_backend():
    assert cfg(type="locon", network_args="use_tucker=true constraint=0.001 rescaled=false").adapter
    assert cfg(type="lora", network_args="use_rslora=true").adapter
    message = problems(type="lora", network_args="use_tucker=true")
    assert "unknown key 'use_tucker' for lora on peft" in message and "use_rslora" in message
    assert "use adapter.rank" in problems(type="locon", network_args="linear_dim=8")
    assert "use adapter.conv_rank" in problems(type="locon", network_args="conv_dim=4 conv_alpha=4")


@pytest.mark.parametrize("adapter,field,words", [
    ({"type": "locon", "backend": "peft"}, "adapter.backend", "PEFT has no 'locon'"),
    ({"type": "loha", "dropout": 0.1}, "adapter.dropout", "rank_dropout"),
    ({"type": "lora", "rank_dropout": 0.1}, "adapter.rank_dropout", "loha and lokr"),
    ({"type": "ia3", "backend": "peft", "module_dropout": 0.1}, "adapter.module_dropout", "no module dropout"),
    ({"type": "loha", "bias": "all"}, "adapter.bias", "lora, dora, oft or boft"),
    ({"type": "lora", "conv_rank": 4}, "adapter.conv_rank", "locon"),
    ({"type": "loha", "conv_rank": 4}, "adapter.conv_rank", "backend 'lycoris'"),
    ({"type": "lora", "lokr_factor": 4}, "adapter.lokr_factor", "only applies to type 'lokr'"),
    ({"type": "lokr", "lokr_use_scalar": True}, "adapter.lokr_use_scalar", "needs backend 'lycoris'"),
    ({"attention_type": "self", "cross_target_modules": "to_k"}, "adapter.self_target_modules", "'both'"),
    ({"type": "full", "train_text_encoder": True}, "adapter.train_text_encoder", "low-rank"),
])
def test_invalid_combinations_name_the_field(adapter, field, words):
    message = problems(**adapter)
    assert field in message and words in message


def test_valid_combinations_pass():
    assert cfg(type="loha", backend="lycoris", conv_rank=4, conv_alpha=2).adapter.conv_rank == 4
    assert cfg(type="lokr", backend="lycoris", lokr_use_scalar=True, lokr_weight_decompose=True).adapter
    assert cfg(type="lokr", lokr_factor=4, lokr_decompose_both=True).adapter.backend_for("sd15") == "peft"
    assert cfg(type="dora", bias="lora_only").adapter.bias == "lora_only"


def test_target_lists_accept_a_space_separated_string():
    a = cfg(target_modules="to_q  to_v,to_out.0", self_target_modules="to_q").adapter
    assert a.target_modules == ["to_q", "to_v", "to_out.0"] and a.self_target_modules == ["to_q"]


def test_text_encoder_training_is_for_sd_only():
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "causal_lm", "path": "tiny:causal_lm"}, "data": {"path": "x.jsonl"},
                     "adapter": {"train_text_encoder": True, "attention_type": "cross"}})
    message = str(err.value)
    assert "adapter.train_text_encoder" in message and "adapter.attention_type" in message
