"""The speed engines of the `memory` section (studio/train/speed.py) act, keep the loss, and the ones this
CPU cannot run are refused before anything loads, naming their field."""
from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from studio.config import load_config
from studio.config.errors import ConfigError
from studio.train.speed import apply_engines, attention_kernel, compile_network
from tests.conftest import REPO

PRESET = str(REPO / "presets/tiny-sd15-lora.json")
LLM_PRESET = str(REPO / "presets/tiny-llm-sft.json")


def loaded(overrides: list[str], preset: str = PRESET):
    from studio.adapters import inject_adapter
    from studio.families.base import build_family

    cfg = load_config(preset, overrides)
    family = build_family(cfg, torch.device("cpu"), torch.float32)
    family.load()
    inject_adapter(family, cfg)
    return cfg, family


@pytest.fixture(scope="module")
def sd():
    cfg, family = loaded([])
    batch = family.collate([family.train_dataset()[i] for i in range(2)])
    return cfg, family, batch


def loss(family, batch, context=None):
    with torch.no_grad(), (context() if context else torch.enable_grad()):
        return family.loss(batch, torch.Generator().manual_seed(7))


def test_channels_last_converts_the_frozen_convolutions_and_keeps_the_loss(sd):
    cfg, family, batch = sd
    before = loss(family, batch)
    unet = family.trainable_module()
    apply_engines(family, load_config(PRESET, ["memory.channels_last=true"]))
    try:
        convs = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs
                             if not c.weight.requires_grad)
        assert not all(c.weight.is_contiguous() for c in convs if c.weight.shape[-1] > 1)  # no longer NCHW
        torch.testing.assert_close(loss(family, batch), before, rtol=1e-5, atol=1e-6)
    finally:
        unet.to(memory_format=torch.contiguous_format)


def sdpa_ops(family, batch, context) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss(family, batch, context)
    return {e.name for e in prof.events() if "scaled_dot_product" in e.name}


def test_attention_backend_forces_the_chosen_sdpa_kernel(sd):
    cfg, family, batch = sd
    kernels = {}
    for choice in ("math", "flash"):
        context = attention_kernel(load_config(PRESET, [f"memory.attention_backend={choice}"]))
        kernels[choice] = (sdpa_ops(family, batch, context), loss(family, batch, context))
    assert any("math" in op for op in kernels["math"][0]) and not any("flash" in op for op in kernels["math"][0])
    assert any("flash" in op for op in kernels["flash"][0]) and not any("math" in op for op in kernels["flash"][0])
    torch.testing.assert_close(kernels["flash"][1], kernels["math"][1], rtol=1e-4, atol=1e-5)
    assert attention_kernel(load_config(PRESET)) is nullcontext  # auto: PyTorch decides, nothing is forced


def test_regional_compile_compiles_each_repeated_block_and_keeps_the_loss(sd):
    cfg, family, batch = sd
    before = loss(family, batch)
    unet = family.trainable_module()
    blocks = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    count = compile_network(family, load_config(PRESET, ["memory.torch_compile=true", "memory.compile_scope=blocks",
                                                         "memory.compile_backend=eager"]))
    try:
        assert count == len(blocks) > 0
        assert all(b._compiled_call_impl is not None for b in blocks) and unet._compiled_call_impl is None
        torch.testing.assert_close(loss(family, batch), before, rtol=1e-5, atol=1e-6)
    finally:
        for b in blocks:
            b._compiled_call_impl = None
    compile_network(family, load_config(PRESET, ["memory.torch_compile=true", "memory.compile_backend=eager"]))
    assert unet._compiled_call_impl is not None  # compile_scope=model: the whole UNet, as before
    unet._compiled_call_impl = None


def test_regional_compile_finds_the_decoder_layers_of_a_causal_lm(tiny_llm_path):
    cfg, family = loaded(["memory.torch_compile=true", "memory.compile_scope=blocks", "memory.compile_backend=eager"],
                         LLM_PRESET)
    assert compile_network(family, cfg) == family.model.config.num_hidden_layers


@pytest.fixture(scope="module")
def tiny_llm_path():
    import os

    from studio.families.tiny import ensure_tiny_model

    return ensure_tiny_model("causal_lm", os.environ["STUDIO_HOME"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a CPU-only machine")
@pytest.mark.parametrize("overrides,field,words", [
    (["memory.attention_backend=efficient"], "memory.attention_backend", "runs only on CUDA"),
    (["memory.attention_backend=cudnn"], "memory.attention_backend", "runs only on CUDA"),
    (["memory.attention_backend=flash_attn"], "memory.attention_backend", "runs only on CUDA"),
    (["memory.torch_compile=true", "memory.compile_backend=cudagraphs"], "memory.compile_backend", "CUDA graphs"),
    (["memory.torch_compile=true", "memory.compile_mode=reduce-overhead"], "memory.compile_mode", "CUDA graphs"),
    (["memory.liger_kernels=true"], "memory.liger_kernels", "Triton for GPUs"),
])
def test_engines_this_cpu_cannot_run_are_refused_by_name(overrides, field, words):
    from studio.runfolder.device import check_device

    with pytest.raises(ConfigError) as err:
        check_device(load_config(LLM_PRESET, overrides))
    assert field in str(err.value) and words in str(err.value)


def test_flash_attn_is_refused_where_attention_is_plain_sdpa(sd):
    cfg, family, batch = sd
    with pytest.raises(ValueError, match="'flash_attn' is not available for sd15"):
        family.use_flash_attn()


def test_a_run_with_every_cpu_engine_trains(tmp_path):
    from studio.commands.train import run_training
    from studio.config import finalize_job
    from tests.conftest import read_progress

    run_dir = tmp_path / "run"
    cfg = finalize_job(load_config(PRESET, [
        f"job.output_dir={run_dir}", "training.max_steps=3", "sampling.prompts=[]", "sampling.at_end=false",
        "checkpointing.save_strategy=no", "memory.channels_last=true", "memory.attention_backend=math",
        "memory.gradient_checkpointing=true",  # the backward recomputes attention: with the forced kernel too
        "memory.torch_compile=true", "memory.compile_scope=blocks", "memory.compile_backend=eager",
        "optimizer.implementation=fused", "logging.logging_steps=1"]))
    run_dir.mkdir(parents=True)
    assert run_training(cfg, run_dir) == 0
    losses = [r["loss"] for r in read_progress(run_dir) if "event" not in r and "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_a_cuda_machine_without_the_packages_is_told_how_to_install_them():
    """engine_problems as on a CUDA machine (cuda=True): flash-attn and liger-kernel are not in the lock."""
    import importlib.util

    from studio.config.sections.runtime import engine_problems

    cfg = load_config(LLM_PRESET, ["memory.attention_backend=flash_attn", "memory.liger_kernels=true"])
    found = dict(engine_problems(cfg, cuda=True))
    if importlib.util.find_spec("flash_attn") is None:
        assert "pip install flash-attn" in found["memory.attention_backend"]
    if importlib.util.find_spec("liger_kernel") is None:
        assert "pip install liger-kernel" in found["memory.liger_kernels"]
    assert engine_problems(load_config(LLM_PRESET, ["memory.attention_backend=cudnn"]), cuda=True) == []
