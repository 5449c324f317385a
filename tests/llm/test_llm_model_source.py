"""What the causal LM family refuses to load, and the config rules of the LLM settings: each error names
the field and says what to do."""
from __future__ import annotations

import shutil

import pytest
import torch

from studio.config import ConfigError
from studio.families.causal_lm import ModelSourceError, check_model_source, quantization_config
from tests.conftest import run_studio
from tests.llm.conftest import TINY_PRESET, llm_config, run_in_process


def test_a_gguf_file_is_refused_before_anything_loads(tmp_path):
    gguf = tmp_path / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(ConfigError, match=r"model\.path.*\.gguf.*inference-only"):
        llm_config([f"model.path={gguf}"])
    result = run_studio("train", str(TINY_PRESET), "--set", f"model.path={gguf}", timeout=120)
    assert result.returncode == 2
    assert "model.path" in result.stderr and "gguf" in result.stderr.lower()


def test_a_folder_holding_only_gguf_is_refused(tmp_path):
    (tmp_path / "model-Q8_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelSourceError, match=r"model\.path: .*GGUF file\(s\) \(model-Q8_0\.gguf\).*cannot be trained"):
        check_model_source(str(tmp_path))


def test_pickle_only_and_config_less_folders_are_refused(tmp_path, tiny_llm):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny_llm / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(ModelSourceError, match=r"only has pickle weights \(pytorch_model\.bin\).*safetensors"):
        check_model_source(str(pickled))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelSourceError, match="has no config.json"):
        check_model_source(str(bare))
    check_model_source(str(tiny_llm))  # the real thing passes


def test_a_bad_model_folder_ends_the_run_with_a_named_error(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.gguf").write_bytes(b"GGUF")
    code, records = run_in_process(tmp_path / "run", [f"model.path={tmp_path / 'model'}"])
    assert code == 1
    error = [r for r in records if r.get("event") == "error"][-1]
    assert error["message"].startswith("model.path:") and "GGUF" in error["message"]


def test_quantization_without_cuda_says_what_is_missing():
    cfg = llm_config(["model.quantization=4bit"])
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: 4-bit loading is possible here")
    with pytest.raises(ValueError, match=r"model\.quantization: '4bit'.*needs a CUDA GPU.*'none'"):
        quantization_config(cfg, torch.device("cpu"), torch.float32)
    assert quantization_config(llm_config([]), torch.device("cpu"), torch.float32) is None


def test_llm_config_rules_name_their_fields():
    with pytest.raises(ConfigError, match=r"model\.variant.*'sft'.*'pretrain'"):
        llm_config(["model.variant=chat"])
    with pytest.raises(ConfigError, match=r"data\.path.*'sft' reads \.jsonl"):
        llm_config(["data.path=notes.txt"])
    with pytest.raises(ConfigError, match=r"model\.quantization.*fully fine-tuned"):
        llm_config(["model.quantization=4bit", "adapter.type=full"])
    with pytest.raises(ConfigError, match=r"data\.max_seq_length"):
        llm_config(["data.max_seq_length=16"])
    assert llm_config(["model.variant="]).model.variant == "sft"
    cfg = llm_config(['adapter.target_modules=["q_proj", "c_attn"]'])
    assert any("c_attn" in note for note in cfg.notes)  # unusual names are noted, not refused


def test_tokenizer_path_override_and_chat_template_fallback(tmp_path, tiny_llm, tokenizer):
    from studio.data.chat import CHAT_TEMPLATES
    from studio.families.causal_lm import CausalLmFamily

    model_only = tmp_path / "model"
    model_only.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(tiny_llm / name, model_only / name)
    family = CausalLmFamily(llm_config([f"model.path={model_only}"]), torch.device("cpu"), torch.float32)
    with pytest.raises(ModelSourceError, match=r"model\.path: no usable tokenizer.*model\.tokenizer_path"):
        family.load()
    plain = tmp_path / "tokenizer"
    bare = copy_without_template(tokenizer)
    bare.save_pretrained(str(plain))
    cfg = llm_config([f"model.path={model_only}", f"model.tokenizer_path={plain}",
                      "data.chat_template_fallback=zephyr"])
    family = CausalLmFamily(cfg, torch.device("cpu"), torch.float32)
    family.load()
    assert family.tokenizer.chat_template == CHAT_TEMPLATES["zephyr"]
    assert any("'zephyr' format" in note for note in cfg.notes)
    text = family.format_prompt("Hi there")
    assert text == "<|user|>\nHi there<|im_end|>\n<|assistant|>\n"  # zephyr turns end with the eos token


def copy_without_template(tokenizer):
    import copy

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    return bare


def test_hub_ids_with_dots_pass_preflight(tmp_path):
    from studio.config.preflight import preflight_problems

    data = tmp_path / "chat.jsonl"
    data.write_text("{}\n")
    for preset in ("llm-sft-lora", "llm-pretrain"):
        path = TINY_PRESET.parent / f"{preset}.json"
        suffix_ok = data if preset == "llm-sft-lora" else data.with_suffix(".txt")
        suffix_ok.write_text("{}\n")
        cfg = llm_config([f"data.path={suffix_ok}"], preset=path)
        assert cfg.model.path.startswith("Qwen/Qwen2.5-0.5B")
        assert preflight_problems(cfg) == []
    with pytest.raises(ConfigError, match=r"adapter\.merge_after_training"):
        llm_config(["model.quantization=8bit", "adapter.merge_after_training=true"])
