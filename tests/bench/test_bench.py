"""Smoke test of the bench code path: `python -m bench --quick` on the tiny SD 1.5 model, plus the
GPU entry's refusal without CUDA. The figures of a quick run are not meaningful; what is checked is
that both loops really train, take turns, and that the results are written as documented."""
from __future__ import annotations

import json

import pytest
import torch

from bench.__main__ import main as bench_main
from bench.timing import Samples, compare


@pytest.fixture(scope="module", autouse=True)
def fresh_accelerate_state():
    """The bench builds Accelerators in this process; later tests may want other precision settings."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    import os

    from bench.cpu import run_cpu_bench

    out = tmp_path_factory.mktemp("bench-results")
    home, threads = os.environ.get("STUDIO_HOME"), torch.get_num_threads()
    result = run_cpu_bench(out, quick=True, launches=True, keep=False)
    # The bench works in its own STUDIO_HOME and thread count, and must leave the test process's alone.
    assert os.environ.get("STUDIO_HOME") == home and torch.get_num_threads() == threads
    return out, result


def test_quick_run_writes_the_table_and_json(quick_run):
    out, result = quick_run
    saved = json.loads((out / "cpu-tiny-sd15-quick.json").read_text())
    assert saved["step_timing"]["ratios"]["bare"]["ratio"] == result["target"]["ratio"]
    table = (out / "cpu-tiny-sd15-quick.txt").read_text()
    assert "studio / bare:" in table and "bare PyTorch+PEFT, cached latents" in table


def test_studio_and_bare_take_turns_and_both_train(quick_run):
    _, result = quick_run
    timing = result["step_timing"]
    samples = timing["samples_ms"]["bare"]
    # Strict alternation: every studio sample has its bare partner, all of them real steps.
    assert len(samples["studio_wall"]) == len(samples["wall"]) >= 4
    assert all(ms > 0 for ms in samples["studio_wall"] + samples["wall"])
    assert timing["ratios"]["bare_vae"]["pairs"] >= 4
    w = result["workload"]
    assert w["trainable_params"] > 0 and w["adapted_layers"] > 0
    assert w["cache"]["items"] == w["items"]  # the studio trained from the cache built by `preprocess`


def test_bare_launch_reports_first_step_and_memory(quick_run):
    _, result = quick_run
    bare = result["launches"]["bare"]
    assert bare["exit"] == 0, bare.get("error")
    assert 0 < bare["first_step_s"] <= bare["total_s"]
    assert bare["peak_rss_mb"] > 50  # python + torch alone are well above this


def test_bare_loop_learns(tiny_sd15):
    """The floor must do the real work: its LoRA moves away from its zero init and fits a fixed batch."""
    from bench.bare import BareLoop

    torch.manual_seed(0)
    data = {"latents": torch.randn(2, 4, 8, 8), "prompt_embeds": torch.randn(2, 77, 32)}
    settings = {"rank": 4, "alpha": 4, "dropout": 0.0, "target_modules": ["to_q", "to_k", "to_v", "to_out.0"],
                "learning_rate": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                "scheduler": "constant", "max_grad_norm": 1.0, "batch_size": 2, "seed": 0}
    loop = BareLoop(str(tiny_sd15), data, settings)
    b_weights = [p for n, p in loop.unet.named_parameters() if "lora_B" in n]
    assert all(float(p.detach().abs().sum()) == 0 for p in b_weights)
    for _ in range(3):
        loop.step()
    assert any(float(p.detach().abs().sum()) > 0 for p in b_weights)


def test_compare_pairs_ratios():
    studio = Samples(wall=[1.1, 2.2, 3.3, 4.4], cpu=[1.0, 2.0, 3.0, 4.0])
    bare = Samples(wall=[1.0, 2.0, 3.0, 4.0], cpu=[1.0, 2.0, 3.0, 4.0])
    result = compare(studio, bare)
    assert result["ratio"] == pytest.approx(1.1)
    assert result["cpu_ratio"] == pytest.approx(1.0)
    assert result["ratio_ci95"][0] <= 1.1 <= result["ratio_ci95"][1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_variant_refuses_without_cuda(tmp_path, capsys):
    assert bench_main(["--gpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "python -m bench" in err
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_gpu_code_path_runs_on_smoke_shapes(tmp_path):
    """`--gpu --size smoke`: the studio's causal-LM family on a random Llama against the bare PEFT loop."""
    from bench.gpu import run_gpu_bench
    from studio.families.base import get_family_class

    result = run_gpu_bench(tmp_path, ["llm"], steps=5, size="smoke")
    llm = result["workloads"]["llm"]
    assert "error" not in llm, llm.get("trace")
    assert llm["trainable_params"]["studio"] == llm["trainable_params"]["bare"] > 0  # the same adapter
    assert llm["forward_flops"] > 0
    assert all(loop["it_per_s"] > 0 for loop in llm["loops"].values())
    assert llm["loops"]["studio"]["estimated_vram_gb"] > 0  # the memory estimate beside the measured peak
    assert json.loads((tmp_path / "gpu-smoke-on-cpu.json").read_text())["workloads"]["llm"]["ratio"]["pairs"] >= 2
    assert get_family_class("causal_lm").__module__ == "studio.families.causal_lm"  # registry put back


def test_sdxl_smoke_models_match():
    """The SDXL comparison trains the same LoRA layers on the same UNet architecture on both sides."""
    import tempfile
    from pathlib import Path

    from bench.gpu import studio_trainer
    from bench.gpu_models import SIZES, BareSdxl

    spec = SIZES["smoke"]["sdxl"]
    with tempfile.TemporaryDirectory() as work:
        trainer = studio_trainer("sdxl", spec, torch.device("cpu"), steps=2, gradient_checkpointing=False,
                                 work=Path(work))
    bare = BareSdxl(spec, "cpu", torch.float32, gradient_checkpointing=False)
    assert sum(p.numel() for p in trainer.adapter.trainable_params()) == sum(p.numel() for p in bare.params)
    batch = next(iter(trainer.train_loader))
    assert torch.isfinite(trainer.family.loss(batch, torch.Generator().manual_seed(0)))
    assert torch.isfinite(bare.step())


def test_estimate_check_compares_estimates_with_peaks(tmp_path, capsys):
    from bench.estimate_check import main as check_main

    result = {"gradient_checkpointing": True, "workloads": {
        "sdxl": {"loops": {"studio": {"peak_vram_gb": 8.2, "estimated_vram_gb": 8.0}}},
        "llm": {"loops": {"studio": {"peak_vram_gb": 30.0, "estimated_vram_gb": 20.0}}}}}
    (tmp_path / "gpu-full.json").write_text(json.dumps(result))
    assert check_main([str(tmp_path / "gpu-full.json")]) == 1  # the llm one is 33 % under
    out = capsys.readouterr().out
    assert "sdxl checkpointing on: measured 8.20 GiB, estimated 8.00 GiB, ratio 0.976 ok" in out
    assert "OUTSIDE" in out.splitlines()[1]


def test_peak_tflops_by_device_name():
    from bench.gpu import gpu_peak_tflops

    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.5
    assert gpu_peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert gpu_peak_tflops("Some Future GPU", None) is None
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3", 500.0) == 500.0


def test_flux_and_studio_variants_run_beside_the_bare_loops(tmp_path):
    """`--workloads flux,llm:packing+fused_adamw` on smoke shapes: the Flux-size workload's code path, and
    a variant's studio settings reaching its trainer while the bare loop stays the plain one."""
    from bench.gpu import run_gpu_bench

    result = run_gpu_bench(tmp_path, ["flux", "llm:packing+fused_adamw"], steps=5, size="smoke")
    flux, packed = result["workloads"]["flux"], result["workloads"]["llm:packing+fused_adamw"]
    for w in (flux, packed):
        assert "error" not in w and not w.get("errors"), w.get("trace") or w.get("errors")
        assert w["forward_flops"] > 0 and all(loop["it_per_s"] > 0 for loop in w["loops"].values())
    assert flux["trainable_params"]["studio"] == flux["trainable_params"]["bare"] > 0  # the same LoRA layers
    assert flux["loops"]["studio"]["estimated_vram_gb"] > 0  # the memory estimate beside its peak
    assert packed["studio_settings"] == ["data.packing=true", "optimizer.implementation=fused"]
    table = (tmp_path / "gpu-smoke-on-cpu.txt").read_text()
    assert "llm:packing+fused_adamw" in table and "flux" in table


def test_workload_names_and_kept_figures():
    from bench.gpu import _figure, forward_flops, parse_workload
    from bench.gpu_models import SIZES, BareLlm

    assert parse_workload("sdxl:compile+channels_last") == (
        "sdxl", ["memory.torch_compile=true", "memory.compile_scope=blocks", "memory.channels_last=true"])
    with pytest.raises(ValueError, match="unknown variant"):
        parse_workload("llm:turbo")
    with pytest.raises(ValueError, match="unknown workload 'gpt'"):
        parse_workload("gpt")
    out = {}
    assert _figure(out, "forward_flops", lambda: 1 / 0) is None
    assert out["errors"] == {"forward_flops": "ZeroDivisionError: division by zero"}
    # Grouped-query attention is counted through eager attention and the model gets its own kernel back.
    bare = BareLlm(SIZES["smoke"]["llm"], "cpu", torch.float32, gradient_checkpointing=False)
    base = bare.model.get_base_model()
    assert base.config.num_key_value_heads < base.config.num_attention_heads
    before = base.config._attn_implementation
    assert forward_flops(lambda m: m(**bare.batch, use_cache=False), bare.model) > 0
    assert base.config._attn_implementation == before
