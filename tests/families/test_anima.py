"""Anima: the rectified-flow loss learns (with and without the LLM adapter), the cache holds every text
output the loss reads, both files load in diffusers' `AnimaModularPipeline` and change it alike (the
ComfyUI-layout file through diffusers' own converter), bad input is named before loading."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from studio.config import ConfigError, deep_merge, finalize_job, load_config
from studio.registry.families import demo_config
from tests.families.fixed_batch import FAST, assert_loss_falls, fixed_batch



def _cfg(**extra):
    return finalize_job(load_config(deep_merge(deep_merge(demo_config("anima"), FAST), extra)))


def _tiny(family: str = "anima") -> Path:
    from studio.families.tiny import ensure_tiny_model

    return ensure_tiny_model(family, os.environ["STUDIO_HOME"])


def _loaded(cfg):
    from studio.families.base import build_family

    torch.manual_seed(0)
    fam = build_family(cfg, torch.device("cpu"), torch.float32)
    fam.load()
    return fam


# ---- training truth --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("freeze", [True, False])
def test_loss_falls_on_a_fixed_batch(freeze):
    from studio.adapters import inject_adapter

    cfg = _cfg(data={"cache_mode": "off"}, adapter={"freeze_llm_adapter": freeze})
    fam = _loaded(cfg)
    handle = inject_adapter(fam, cfg)
    assert set(handle.components) == ({"transformer"} if freeze else {"transformer", "text_conditioner"})
    batch = fixed_batch(fam)
    conditioner_before = {k: v.clone() for k, v in fam.text_conditioner.state_dict().items() if "lora_B" in k}
    assert_loss_falls(fam, handle, batch)
    after = fam.text_conditioner.state_dict()
    moved = [k for k, v in conditioner_before.items() if not torch.equal(v, after[k])]
    assert bool(moved) == (not freeze)  # the LLM adapter trains only when it is not frozen
    with torch.no_grad():
        again = [fam.loss(batch, torch.Generator().manual_seed(s)).item() for s in (7, 7, 8)]
    assert again[0] == again[1] != again[2]


@pytest.mark.slow
def test_training_reads_cached_latents_and_text_outputs(tmp_path):
    cfg = _cfg(data={"cache_mode": "on", "cache_dir": str(tmp_path / "cache")})
    fam = _loaded(cfg)
    assert fam.cache is not None and fam.cache.serves_latents and fam.cache.serves_text
    assert fam.encoders_on_device == (False, False)
    item = fam.train_dataset("train")[0]
    assert "pixel_values" not in item and item["latents"].shape == (16, 8, 8)
    fresh = fam.encode_text([item["caption"]])
    assert set(fresh) == {"qwen_prompt_embeds", "qwen_attention_mask", "t5_input_ids", "t5_attention_mask"}
    for name, value in fresh.items():
        assert torch.equal(item[name].to(value.dtype), value[0]), name
    assert item["qwen_prompt_embeds"].shape[0] == item["t5_input_ids"].shape[0] == 512


@pytest.mark.slow
def test_padding_to_512_tokens_matches_the_pipelines_conditioning():
    """The cache pads captions to 512 tokens; the pipeline pads to the batch's longest. The LLM adapter
    gives the same conditioning either way (masked source, masked and zeroed targets, padded to 512)."""
    from diffusers.modular_pipelines.anima.encoders import AnimaTextEncoderStep

    from studio.families.anima import _Parts

    fam = _loaded(_cfg(data={"cache_mode": "off"}))
    captions = ["a red fox", "a blue square on a long grey table in the evening"]
    padded = fam.condition(fam.text_conditioner, fam.encode_text(captions), torch.float32)
    parts = _Parts(text_encoder=fam.text_encoders[0], tokenizer=fam.tokenizer, t5_tokenizer=fam.t5_tokenizer)
    raw = AnimaTextEncoderStep.encode_prompt(parts, captions, prepare_unconditional_embeds=False,
                                             device=torch.device("cpu"), dtype=torch.float32)
    assert raw["qwen_prompt_embeds"].shape[1] < 512
    pipeline = fam.condition(fam.text_conditioner, raw, torch.float32)
    assert padded.shape == pipeline.shape == (2, 512, 32)
    assert torch.allclose(padded, pipeline, atol=1e-5)


# ---- exports ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=[True, False], ids=["dit", "dit+llm_adapter"])
def lora_run(request, tmp_path_factory):
    from studio.commands.train import run_training
    from studio.runfolder import read_progress

    run = tmp_path_factory.mktemp("anima-lora")
    cfg = _cfg(job={"output_dir": str(run)}, adapter={"freeze_llm_adapter": request.param})
    assert run_training(cfg, run) == 0, read_progress(run)[0][-3:]
    return request.param, run, read_progress(run)[0]


def _pipeline_output(lora: Path | None = None, weight_name: str | None = None):
    from diffusers import AnimaModularPipeline

    pipe = AnimaModularPipeline.from_pretrained(str(_tiny()))
    pipe.load_components(dtype=torch.float32)
    if lora is not None:
        pipe.load_lora_weights(str(lora), weight_name=weight_name)
    return pipe(prompt="a red circle", num_inference_steps=2, height=64, width=64, output_type="pt",
                generator=torch.Generator().manual_seed(0), output="images")


@pytest.mark.slow
def test_both_files_are_checked_and_change_the_pipeline_alike(lora_run):
    """adapter_model.safetensors loads with the pipeline's `load_lora_weights` and changes its output; the
    ComfyUI-layout file, read back by the same loader (diffusers' Anima converter), gives the same output
    within 1e-3 of the adapter's effect."""
    from tests.conftest import checked_single_file

    freeze, run, records = lora_run
    single, keys = checked_single_file(records)
    assert keys and all(k.startswith("diffusion_model.") and (k.endswith(".lora_A.weight") or
                                                              k.endswith(".lora_B.weight")) for k in keys)
    assert any(".blocks.0.self_attn.q_proj." in k for k in keys)  # the original (ComfyUI) module names
    assert any(k.startswith("diffusion_model.llm_adapter.") for k in keys) == (not freeze)

    base = _pipeline_output()
    peft = _pipeline_output(run, "adapter_model.safetensors")
    from_single = _pipeline_output(single.parent, single.name)
    effect = (peft - base).norm()
    assert effect > 1e-4 * base.norm(), "the adapter does not change the output"
    assert (from_single - peft).norm() <= 1e-3 * effect


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lokr", "full"])
def test_lycoris_types_train_the_llm_adapter_too_and_are_checked(kind, tmp_path):
    """LoKr and full fine-tuning (LyCORIS) with `freeze_llm_adapter` off: the DiT's and the LLM adapter's
    layers are in the file under their own prefixes and it is checked through LyCORIS; no ComfyUI file is
    written (the Anima layout diffusers reads holds plain LoRA only) and the run says why."""
    from safetensors import safe_open

    from studio.commands.train import run_training
    from studio.runfolder import read_progress

    cfg = _cfg(job={"output_dir": str(tmp_path)}, training={"max_steps": 2, "learning_rate": 1e-3},
               adapter={"type": kind, "backend": "lycoris", "rank": 4, "alpha": 4, "freeze_llm_adapter": False})
    assert run_training(cfg, tmp_path) == 0
    records = read_progress(tmp_path)[0]
    saved = [r for r in records if r.get("event") == "saved"]
    assert [r["format"] for r in saved] == ["peft"] and saved[0]["verified"] is True, saved
    warnings = [r["message"] for r in records if r.get("event") == "warning"]
    assert any("kohya file not written" in w and "plain LoRA" in w for w in warnings), warnings
    with safe_open(str(tmp_path / "adapter_model.safetensors"), framework="pt") as f:
        starts = {k.split("_")[0] for k in f.keys()}
    assert starts == {"diffusion", "llm"}  # diffusion_model_* (DiT) and llm_adapter_* (LLM adapter)


# ---- bad input, named before any model loads ---------------------------------------------------------
def test_wrong_folder_for_the_family_is_named():
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "anima", "path": str(_tiny("sd3"))}})
    message = err.value.by_field["model.path"]
    assert "StableDiffusion3Pipeline" in message and "AnimaModularPipeline" in message
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "sd3", "path": str(_tiny())}})
    assert "model.family 'anima'" in err.value.by_field["model.path"]


def test_missing_text_encoder_is_named(tmp_path):
    folder = tmp_path / "anima-no-qwen"
    shutil.copytree(_tiny(), folder)
    shutil.rmtree(folder / "text_encoder")
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "anima", "path": str(folder)}})
    message = err.value.by_field["model.path"]
    assert "Qwen3 text encoder" in message and "text_encoder" in message


def test_odd_bucket_sizes_are_named():
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "anima"}, "data": {"bucket_step": 24, "resolution": 520}})
    assert "multiple of 16" in err.value.by_field["data.bucket_step"]
    assert "(got 520)" in err.value.by_field["data.resolution"]


def test_freeze_llm_adapter_only_where_there_is_one():
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "sd15"}, "adapter": {"freeze_llm_adapter": False}})
    assert "anima" in err.value.by_field["adapter.freeze_llm_adapter"]
    assert load_config({"model": {"family": "anima"}}).adapter.freeze_llm_adapter is True


@pytest.mark.parametrize("name", ["tiny-anima-lora", "anima-lora"])
def test_presets_validate(name):
    from studio.config.presets import load_preset

    cfg = load_preset(name)
    assert cfg.model.family == "anima" and cfg.data.resolution % 16 == 0 and cfg.adapter.freeze_llm_adapter
    if name.startswith("tiny-"):
        assert cfg.model.path == "tiny:anima" and cfg.data.path == "demo:images"


@pytest.mark.slow
def test_merged_folder_loads_as_an_anima_pipeline(tmp_path):
    from diffusers import AnimaModularPipeline

    from studio.commands.train import run_training
    from studio.runfolder import read_progress

    cfg = _cfg(job={"output_dir": str(tmp_path)}, training={"max_steps": 1}, adapter={"merge_after_training": True})
    assert run_training(cfg, tmp_path) == 0
    saved = {r["format"]: r for r in read_progress(tmp_path)[0] if r.get("event") == "saved"}
    assert saved["merged"]["verified"] is True, saved["merged"]
    index = json.loads((tmp_path / "merged" / "modular_model_index.json").read_text())
    assert str(tmp_path) not in json.dumps(index)  # movable: no absolute paths recorded
    pipe = AnimaModularPipeline.from_pretrained(str(tmp_path / "merged"))
    pipe.load_components(dtype=torch.float32)
    assert pipe.transformer is not None and pipe.text_conditioner is not None
