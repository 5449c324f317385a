"""The GPU memory estimate (studio/config/vram.py): calibration against measured peaks, sanity of its
direction, every registered family, `auto` checkpointing, and the fit check before launch."""
from __future__ import annotations

import json
import os

import pytest

from studio.config import ConfigError, load_config
from studio.config.model_shapes import model_from_shapes, read_model
from studio.config.vram import GIB, decide_checkpointing, estimate_vram
from studio.config.vram_fit import checkpointing_for, fit_problems, fitting_changes
from studio.registry.families import FAMILIES, demo_config

# Peaks measured by `python -m bench --gpu` on an NVIDIA H200 (bf16, LoRA rank 32, the studio's loop;
# issue #16): GiB of tensors allocated (torch.cuda.max_memory_allocated), with and without checkpointing.
MEASURED = {("sdxl", True): 8.2, ("sdxl", False): 34.6, ("llm", True): 30.0, ("llm", False): 81.0}


@pytest.fixture(scope="module")
def real_size():
    """SDXL's UNet and Llama-3.1-8B built on the meta device from the bench's configs (no weights)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.gpu_models import LLAMA_8B, SDXL_UNET

    with init_empty_weights():
        unet = UNet2DConditionModel(**SDXL_UNET)
        llm = LlamaForCausalLM(LlamaConfig(**LLAMA_8B))
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    return {"sdxl": model_from_shapes(dict(unet.config), shapes(unet), "unet"),
            "llm": model_from_shapes(llm.config.to_dict(), shapes(llm), "model")}


def bench_config(kind: str, checkpointing, **more):
    """The `bench --gpu` workloads as studio configs (bench/gpu.py `studio_trainer`)."""
    from bench.gpu_models import LLM_TARGETS

    memory = {"mixed_precision": "bf16", "gradient_checkpointing": checkpointing, **more.pop("memory", {})}
    if kind == "sdxl":
        data = {"model": {"family": "sdxl", "path": "tiny:sdxl"},
                "data": {"path": "demo:images", "resolution": 1024, "cache_mode": "on"},
                "adapter": {"type": "lora", "rank": 32, "alpha": 32}}
    else:
        data = {"model": {"family": "causal_lm", "path": "tiny:causal_lm", "variant": "sft"},
                "data": {"path": "presets/data/tiny-chat.jsonl", "max_seq_length": 2048},
                "adapter": {"type": "lora", "rank": 32, "alpha": 32, "target_modules": LLM_TARGETS}}
    data["training"] = {"batch_size": 4, "gradient_accumulation_steps": 1}
    data["memory"] = memory
    for key, value in more.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return load_config(data)


def quantized(cfg, bits: str):
    """`model.quantization` set on any family (the schema may still limit it to some; the estimate reads
    it for every family)."""
    out = cfg.model_copy(deep=True)
    out.model.quantization = bits
    return out


@pytest.mark.parametrize("kind,checkpointing", list(MEASURED))
def test_estimate_within_15_percent_of_measured_peaks(real_size, kind, checkpointing):
    est = estimate_vram(bench_config(kind, checkpointing), real_size[kind])
    assert est.tensors / GIB == pytest.approx(MEASURED[kind, checkpointing], rel=0.15)
    assert est.total > est.tensors  # the CUDA context and the allocator's slack come on top


def test_parameter_counts_are_the_real_ones(real_size):
    assert real_size["sdxl"].trained.params == pytest.approx(2.567e9, rel=1e-3)
    assert real_size["llm"].trained.params == pytest.approx(8.03e9, rel=1e-3)
    # LoRA r32 on every projection of Llama-8B: 32 layers x r x sum(in + out)
    est = estimate_vram(bench_config("llm", True), real_size["llm"])
    per_layer = 32 * ((4096 + 4096) * 2 + (4096 + 1024) * 2 + (4096 + 14336) * 3)
    assert est.trainable == 32 * per_layer


def test_estimate_moves_the_right_way(real_size):
    for kind in ("sdxl", "llm"):
        base = estimate_vram(bench_config(kind, False), real_size[kind])
        assert estimate_vram(bench_config(kind, False, training__batch_size=8), real_size[kind]).total > base.total
        assert estimate_vram(bench_config(kind, True), real_size[kind]).total < base.total
        four = estimate_vram(quantized(bench_config(kind, False), "4bit"), real_size[kind])
        eight = estimate_vram(quantized(bench_config(kind, False), "8bit"), real_size[kind])
        assert four.parts["weights"] < eight.parts["weights"] < base.parts["weights"]
        lighter = estimate_vram(bench_config(kind, False, optimizer__name="adamw8bit"), real_size[kind])
        assert lighter.parts["trainable"] < base.parts["trainable"]
    big = estimate_vram(bench_config("sdxl", True, data__resolution=1536), real_size["sdxl"])
    assert big.total > estimate_vram(bench_config("sdxl", True), real_size["sdxl"]).total


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_gets_an_estimate_from_its_tiny_model(family):
    from studio.families.tiny import ensure_tiny_model

    folder = ensure_tiny_model(family, os.environ["STUDIO_HOME"])
    model = read_model(folder)
    assert model.trained.params > 0
    est = estimate_vram(load_config(demo_config(family)), model, gpu_bytes=8 * GIB)
    assert est.trainable > 0 and est.parts["activations"] > 0 and est.fits
    assert est.step_seconds > 0 and "VRAM estimate" in est.lines()[0]


def test_auto_checkpointing_is_on_only_when_needed(real_size):
    sdxl = real_size["sdxl"]
    cfg = bench_config("sdxl", "auto")
    on, why = decide_checkpointing(cfg, sdxl, 24 * GIB)  # ~37 GiB without it
    assert on and "would not fit" in why
    off, why = decide_checkpointing(cfg, sdxl, 80 * GIB)
    assert not off and "off" in why
    unknown, why = decide_checkpointing(cfg, sdxl, None)  # CPU or unknown GPU: deterministic
    assert unknown and "no GPU memory size" in why
    assert decide_checkpointing(bench_config("sdxl", False), sdxl, 8 * GIB) == (False, "gradient checkpointing "
                                                                                        "off (set in the config)")


def test_old_configs_keep_true_and_false():
    assert load_config({"memory": {"gradient_checkpointing": True}}).memory.gradient_checkpointing is True
    assert load_config({"memory": {"gradient_checkpointing": False}}).memory.gradient_checkpointing is False
    assert load_config({}).memory.gradient_checkpointing == "auto"
    with pytest.raises(ConfigError) as err:
        load_config({"memory": {"gradient_checkpointing": "sometimes"}})
    assert "memory.gradient_checkpointing" in str(err.value)


def test_fitting_changes_end_under_the_card(real_size):
    cfg = bench_config("llm", False)
    changes = fitting_changes(cfg, real_size["llm"], 24 * GIB)
    settings, est = changes[-1]
    assert est.fits and settings["memory.gradient_checkpointing"] is True
    assert est.total <= 24 * GIB


def test_tiny_job_with_auto_records_the_decision(tmp_path):
    from studio.commands.train import plan_memory

    cfg = load_config({**demo_config("sd15"), "memory": {"gradient_checkpointing": "auto", "gpu_memory_gb": 80}})
    planned = plan_memory(cfg)
    assert planned.memory.gradient_checkpointing is False
    assert any("auto" in n and "off" in n for n in planned.notes)
    assert any(n.startswith("memory estimate:") for n in planned.notes)
    assert checkpointing_for(load_config(demo_config("sd15")))[0] is True  # no GPU size here: on


def test_a_run_that_cannot_fit_is_refused_before_loading(tmp_path):
    from tests.conftest import run_studio

    out = tmp_path / "run"
    config = tmp_path / "job.json"
    config.write_text(json.dumps({**demo_config("sd15"), "job": {"output_dir": str(out)},
                                  "memory": {"gpu_memory_gb": 0.25, "gradient_checkpointing": False}}))
    result = run_studio("train", str(config))
    assert result.returncode == 2, result.stderr
    assert "memory.vram_check" in result.stderr and "GiB of GPU memory" in result.stderr
    assert "memory.gradient_checkpointing=true" in result.stderr or "training.batch_size" in result.stderr
    assert not out.exists()  # refused before the run folder (and any model) existed
    cfg = load_config(json.loads(config.read_text()) | {"memory": {"gpu_memory_gb": 0.25, "vram_check": "warn"}})
    problems, warnings = fit_problems(cfg)
    assert not problems and "GiB of GPU memory" in warnings[0]


def test_vram_command_prints_the_breakdown(tmp_path):
    from tests.conftest import run_studio

    result = run_studio("vram", "presets/tiny-sd15-lora.json", "--gpu-gb", "24", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fits"] is True and report["gpu_gib"] == 24.0
    assert set(report["parts_gib"]) == {"weights", "trainable", "activations", "encoders", "reserve"}


def test_picker_proposes_fitting_settings_per_family(real_size):
    from studio.config.model_shapes import Part
    from studio.config.vram_fit import propose_for_gpu

    # SDXL at batch 4 on a 12 GB card: encoders cached, checkpointing; on an 80 GB card only the size.
    unet = real_size["sdxl"].trained  # + SDXL's two CLIP text encoders and VAE (parameter counts)
    encoders = [Part(n, {}, {"w": (size,)}) for n, size in (("text_encoder", 123_060_480),
                                                             ("text_encoder_2", 694_659_840), ("vae", 83_653_863))]
    sdxl_model = model_from_shapes(unet.config, unet.shapes, "unet", encoders)
    sdxl = bench_config("sdxl", False, data__cache_mode="off")
    changes, est = propose_for_gpu(sdxl, sdxl_model, 8)
    assert est.fits and changes["data.cache_mode"] == "on" and changes["memory.gradient_checkpointing"] is True
    assert changes["training.batch_size"] < 4
    changes, est = propose_for_gpu(sdxl, sdxl_model, 80)
    assert est.fits and changes == {"memory.gpu_memory_gb": 80.0, "memory.gradient_checkpointing": "auto"}
    assert not est.gradient_checkpointing  # auto: 80 GB hold it without
    # Llama-8B on 16 GB: the bf16 weights alone are 15 GiB, so it takes a quantized base (the LLM has one).
    changes, est = propose_for_gpu(bench_config("llm", False), real_size["llm"], 16)
    assert est.fits and changes["model.quantization"] in ("8bit", "4bit")
    assert changes["training.gradient_accumulation_steps"] * changes["training.batch_size"] == 4  # same effective batch
    # A 2 B-parameter ACE-Step-like transformer: encoders offloaded first, then shorter song chunks.
    layers, h, inter = 24, 2048, 6144
    shapes = {f"layers.{i}.self_attn.{p}.weight": (h, h) for i in range(layers) for p in ("to_q", "to_k", "to_v", "to_out.0")}
    shapes |= {f"layers.{i}.mlp.{p}.weight": s for i in range(layers)
               for p, s in (("gate_proj", (inter, h)), ("up_proj", (inter, h)), ("down_proj", (h, inter)))}
    music = model_from_shapes({"hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
                               "num_attention_heads": 16, "patch_size": 2}, shapes, "transformer",
                              [Part("vae", {"sampling_rate": 48000, "downsampling_ratios": [2, 4, 4, 6, 10]},
                                    {"w": (300_000_000,)}),
                               Part("text_encoder", {}, {"w": (600_000_000,)})])
    song = load_config({"model": {"family": "acestep", "variant": "turbo"},
                        "data": {"path": "demo:songs", "max_duration": 240}, "memory": {"mixed_precision": "bf16"}})
    changes, est = propose_for_gpu(song, music, 12)  # ~7 GiB with checkpointing (auto turns it on)
    assert est.fits and est.gradient_checkpointing and "memory.offload_encoder" not in changes
    changes, est = propose_for_gpu(song, music, 6)
    assert est.fits and changes["memory.offload_encoder"] is True and est.parts["encoders"] == 0
    changes, est = propose_for_gpu(song, music, 4)
    assert est.fits and changes["data.chunk_seconds"] <= 120


@pytest.mark.slow
def test_auto_checkpointing_is_decided_printed_and_recorded(tmp_path):
    """A real (tiny) run with `auto` and no GPU: checkpointing on, said in the console, kept in training_args."""
    from tests.conftest import run_studio

    run_dir = tmp_path / "run"
    result = run_studio("train", "presets/tiny-sd15-lora.json", "--set", f"job.output_dir={run_dir}",
                        "--set", "memory.gradient_checkpointing=auto", "--set", "training.max_steps=2",
                        "--set", "checkpointing.save_strategy=no", "--set", "sampling.prompts=[]",
                        "--set", "adapter.verify_exports=false")
    assert result.returncode == 0, result.stderr[-3000:]
    args = json.loads((run_dir / "training_args.json").read_text())
    decision = "gradient checkpointing on (auto: no GPU memory size known"
    assert args["config"]["memory"]["gradient_checkpointing"] is True
    assert any(n.startswith(decision) for n in args["notes"])
    assert any(n.startswith("memory estimate: about") for n in args["notes"])
    assert decision in (run_dir / "console.log").read_text()


def test_queue_add_refuses_a_run_that_cannot_fit(tmp_path, studio_home):
    from studio.families.tiny import ensure_tiny_model
    from tests.conftest import run_studio

    ensure_tiny_model("sd15", studio_home)
    config = tmp_path / "job.json"
    config.write_text(json.dumps({**demo_config("sd15"), "memory": {"gpu_memory_gb": 0.25}}))
    result = run_studio("queue", "add", str(config))
    assert result.returncode == 2 and "memory.vram_check" in result.stderr, result.stderr
    assert json.loads(run_studio("queue", "list", "--json").stdout) == []  # no row was added


def test_a_hub_model_not_downloaded_has_no_estimate_offline():
    """The tests run offline (HF_HUB_OFFLINE=1): a hub id outside the cache is named, nothing is fetched."""
    from tests.conftest import run_studio

    result = run_studio("vram", "presets/llm-sft-lora.json")
    assert result.returncode == 2
    assert "model.path" in result.stderr and "Qwen/Qwen2.5-0.5B-Instruct" in result.stderr
    cfg = load_config("presets/llm-sft-lora.json", ["memory.gradient_checkpointing=auto"])
    on, why = checkpointing_for(cfg, hub=True)
    assert on and "cannot be read before loading" in why


@pytest.mark.parametrize("preset", ["flux-dev-lora-24gb", "flux-dev-lora-16gb"])
def test_the_flux_card_presets_state_the_estimates_peak(preset):
    """The 24 GB and 16 GB presets state their expected VRAM, and the estimate checks it: the
    figure in the description (decimal GB) is within 15 % of the estimate for FLUX.1-dev's transformer
    (built on the meta device from the bench's config) and fits the card it is for."""
    import re

    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    from bench.gpu_models import FLUX_DEV
    from studio.config.presets import load_preset, preset_path

    with init_empty_weights():
        net = FluxTransformer2DModel(**FLUX_DEV)
    model = model_from_shapes(dict(net.config), {k: tuple(v.shape) for k, v in net.state_dict().items()},
                              "transformer")
    description = json.loads(preset_path(preset).read_text())["description"]
    stated_gb = float(re.search(r"expected peak about (\d+(?:\.\d+)?) GB", description).group(1))
    card_gb = float(re.search(r"for a (\d+) GB card", description).group(1))
    estimate = estimate_vram(load_preset(preset), model).total / 1e9
    assert stated_gb == pytest.approx(estimate, rel=0.15)
    assert estimate < card_gb
