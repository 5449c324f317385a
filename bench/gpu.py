"""`python -m bench --gpu`: the studio against bare PyTorch + PEFT on real-size models, on a CUDA GPU.

Workloads (random weights built from the real configs, see gpu_models.py):
  sdxl  SDXL UNet, LoRA rank 32 on the attention projections, bf16, 1024 px, batch 4, from cached latents
  llm   Llama-3.1-8B architecture, LoRA rank 32 on every projection, bf16, 2048 tokens, batch 4 (SFT loss)
  flux  FLUX.1-dev transformer (11.9 B), LoRA rank 32 on the attention projections, bf16, 1024 px, batch 1

A workload may name studio variants after a colon, joined by `+` (`sdxl:compile+channels_last`,
`llm:liger+packing`): the studio side runs with the settings of `VARIANTS`, the bare loop stays plain, so
each variant's it/s and VRAM stand beside the same bare loop.

Per workload and loop: seconds per optimizer step (median of blocks of 5 steps, the studio and the
bare loop taking turns, synchronised only at block edges), it/s, peak VRAM (what building the loop
allocated plus the most its training steps added on top; both loops share the GPU), and model FLOP
utilisation:
3 x forward FLOPs (counted by torch.utils.flop_counter on one forward pass; the PaLM convention
for forward + backward) x it/s / the GPU's dense bf16 peak. Gradient checkpointing is on by default
(`--size full` needs it for two 8 B models side by side); its recomputation is not counted as model FLOPs.
Unattended: each workload's result (or its error) goes into the JSON, then the next one runs.
"""
from __future__ import annotations

import gc
import shutil
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch

from bench.gpu_models import SIZES
from studio.config.vram import PEAK_BF16_TFLOPS  # the GPU table the step-time estimate uses too

BLOCK = 5  # steps per timed block: one host sync per block, as a real loop that logs now and then
# Studio settings of each variant (`--workloads sdxl:compile+channels_last`); the bare loops never change.
VARIANTS = {
    "compile": ["memory.torch_compile=true", "memory.compile_scope=blocks"],
    "compile_model": ["memory.torch_compile=true", "memory.compile_scope=model"],
    "channels_last": ["memory.channels_last=true"],
    "flash": ["memory.attention_backend=flash"],
    "cudnn": ["memory.attention_backend=cudnn"],
    "fused_adamw": ["optimizer.implementation=fused"],
    "packing": ["data.packing=true"],
    "liger": ["memory.liger_kernels=true"],
}


class GpuUnavailable(RuntimeError):
    pass


def gpu_peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((value for fragment, value in PEAK_BF16_TFLOPS if fragment in name), None)


def run_gpu_bench(out_dir: Path, workloads: list[str], steps: int = 30, peak_tflops: float | None = None,
                  size: str = "full", gradient_checkpointing: bool = True, profile: bool = False) -> dict:
    from bench.report import bench_settings

    if size == "full" and not torch.cuda.is_available():
        raise GpuUnavailable("no CUDA device (torch.cuda.is_available() is False, torch "
                             f"{torch.__version__}). Run it on a machine with an NVIDIA GPU and a CUDA build of "
                             "torch, or `python -m bench` for the CPU bench.")
    for name in workloads:
        parse_workload(name, size)  # every name checked before the first model is built
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # A smoke run on a shared CPU uses one thread, as the CPU bench (see cpu.py).
    with bench_settings(1 if device.type == "cpu" else torch.get_num_threads()):
        return _run(out_dir, workloads, steps, peak_tflops, size, gradient_checkpointing, device, profile)


def parse_workload(name: str, size: str = "full") -> tuple[str, list[str]]:
    """`sdxl:compile+channels_last` -> ("sdxl", [the variants' studio settings])."""
    base, _, variants = name.partition(":")
    if base not in SIZES[size]:
        raise ValueError(f"--workloads: unknown workload '{base}'; allowed: {', '.join(SIZES[size])}")
    chosen = [v for v in variants.split("+") if v]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise ValueError(f"--workloads: unknown variant(s) {unknown} in '{name}'; allowed: {', '.join(VARIANTS)}")
    return base, [item for v in chosen for item in VARIANTS[v]]


def _run(out_dir: Path, workloads: list[str], steps: int, peak_tflops: float | None, size: str,
         gradient_checkpointing: bool, device: torch.device, profile: bool = False) -> dict:
    from bench.report import environment, write_results

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    env = environment()
    peak = gpu_peak_tflops(env["cuda"] or "", peak_tflops) if device.type == "cuda" else None
    result = {"kind": f"gpu-{size}", "environment": env, "device": str(device), "dtype": str(dtype),
              "peak_bf16_tflops": peak, "gradient_checkpointing": gradient_checkpointing, "workloads": {}}
    for name in workloads:
        started = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix=f"studio-gpu-bench-{name}-"))  # the studio's run folders
        try:
            base, overrides = parse_workload(name, size)
            result["workloads"][name] = run_workload(base, SIZES[size][base], device, dtype, steps, peak,
                                                     gradient_checkpointing, work, overrides,
                                                     profile_dir=out_dir if profile else None)
        except Exception as err:  # noqa: BLE001 - unattended: record and go on with the next workload
            result["workloads"][name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-2000:]}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        result["workloads"][name]["seconds"] = round(time.perf_counter() - started, 1)
        _release()
    stem = f"gpu-{size}" if device.type == "cuda" else f"gpu-{size}-on-cpu"
    table = gpu_table(result)
    paths = write_results(result, out_dir, stem, table)
    print(table)
    print(f"\nresults: {paths[0]}")
    return result


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def studio_trainer(name: str, spec: dict, device: torch.device, steps: int, gradient_checkpointing: bool, work: Path,
                   overrides: list[str] = ()):
    """The studio's `build_trainer` on the random-weight family (registered under the family's name), with
    a variant's settings (`overrides`) on top."""
    from accelerate import Accelerator

    from studio.config import finalize_job, load_config
    from studio.train.setup import build_trainer

    from bench import gpu_models

    precision = "bf16" if device.type == "cuda" else "no"
    common = {"training": {"batch_size": spec["batch"], "max_steps": steps, "learning_rate": 1e-4, "seed": 0,
                           "gradient_accumulation_steps": 1},  # the LLM family defaults to 4: one per step here
              "memory": {"mixed_precision": precision, "gradient_checkpointing": gradient_checkpointing},
              "checkpointing": {"save_strategy": "no"}, "sampling": {"prompts": [], "at_end": False},
              "scheduler": {"name": "constant", "warmup_ratio": 0.0}, "job": {"output_dir": str(work / name)},
              # GPU: the studio's default loader (workers); the CPU smoke run keeps everything in one process
              "dataloader": {"num_workers": None if device.type == "cuda" else 0}}
    if name == "sdxl":
        gpu_models.RandomSdxlFamily.SPEC = spec
        family, target = "sdxl", "bench.gpu_models:RandomSdxlFamily"
        job = {"model": {"family": "sdxl", "path": "tiny:sdxl", "device": device.type},
               "data": {"path": "demo:images", "resolution": spec["resolution"]},
               "adapter": {"type": "lora", "rank": spec["rank"], "alpha": spec["rank"]}, **common}
    elif name == "flux":
        gpu_models.RandomFluxFamily.SPEC = spec
        family, target = "flux", "bench.gpu_models:RandomFluxFamily"
        job = {"model": {"family": "flux", "path": "tiny:flux", "variant": "dev", "device": device.type},
               "data": {"path": "demo:images", "resolution": spec["resolution"]},
               "loss": {"weighting_scheme": "none", "guidance": 3.5},
               "adapter": {"type": "lora", "rank": spec["rank"], "alpha": spec["rank"]}, **common}
    else:
        gpu_models.RandomLlmFamily.SPEC = spec
        family, target = "causal_lm", "bench.gpu_models:RandomLlmFamily"
        job = {"model": {"family": "causal_lm", "path": "tiny:causal_lm", "variant": "sft", "device": device.type},
               "data": {"path": "presets/data/tiny-chat.jsonl", "max_seq_length": max(128, spec["seq"])},
               "adapter": {"type": "lora", "rank": spec["rank"], "alpha": spec["rank"],
                           "target_modules": gpu_models.LLM_TARGETS}, **common}
    cfg = finalize_job(load_config(job, list(overrides)))
    with registered(family, target):
        return build_trainer(cfg, Accelerator(mixed_precision=precision, cpu=device.type == "cpu"))


@contextmanager
def registered(family: str, target: str):
    """The family id served by `target` while the trainer is built, then the studio's own again."""
    from dataclasses import replace

    from studio.registry.families import FAMILIES

    previous = FAMILIES[family]
    FAMILIES[family] = replace(previous, family_class=target)
    try:
        yield
    finally:
        FAMILIES[family] = previous


def forward_flops(step_inputs, module: torch.nn.Module) -> float:
    """FLOPs of one forward pass (no autograd), counted by torch.utils.flop_counter. A transformers model is
    counted with eager attention: the counter's SDPA formula refuses grouped-query attention ("query/key/value
    shapes are incompatible" with fewer K/V heads), eager's matmuls count the same work."""
    from peft import PeftModel
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import PreTrainedModel

    base = module.get_base_model() if isinstance(module, PeftModel) else module
    attention = base.config._attn_implementation if isinstance(base, PreTrainedModel) else None
    if attention is not None:
        base.set_attn_implementation("eager")
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            step_inputs(module)
    finally:
        if attention is not None:
            base.set_attn_implementation(attention)
    return float(counter.get_total_flops())


BARE_LOOPS = {"sdxl": "BareSdxl", "llm": "BareLlm", "flux": "BareFlux"}


def _network(name: str, bare) -> torch.nn.Module:
    return {"sdxl": lambda: bare.unet, "flux": lambda: bare.transformer, "llm": lambda: bare.model}[name]()


def _figure(out: dict, key: str, compute):
    """One figure of a workload; its failure is recorded beside it and the timings already taken stay."""
    try:
        return compute()
    except Exception as err:  # noqa: BLE001 - unattended: keep the rest of the workload's result
        out.setdefault("errors", {})[key] = f"{type(err).__name__}: {err}"
        return None


def run_workload(name: str, spec: dict, device: torch.device, dtype, steps: int, peak: float | None,
                 gradient_checkpointing: bool, work: Path, overrides: list[str] = (),
                 profile_dir: Path | None = None) -> dict:
    from bench import gpu_models
    from bench.timing import run_paired

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    blocks = max(2, steps // BLOCK)
    base = _allocated()  # whatever an earlier workload left behind
    trainer = studio_trainer(name, spec, device, steps=BLOCK * (2 * blocks + 4),
                             gradient_checkpointing=gradient_checkpointing, work=work, overrides=overrides)
    studio_bytes = _allocated() - base
    bare = getattr(gpu_models, BARE_LOOPS[name])(spec, device, dtype, gradient_checkpointing)
    bare_bytes = _allocated() - base - studio_bytes
    out = {"shape": {k: v for k, v in spec.items() if k not in ("unet", "model", "transformer")},
           "studio_settings": list(overrides),
           "trainable_params": {"studio": sum(p.numel() for p in trainer.adapter.trainable_params()),
                                "bare": sum(p.numel() for p in bare.params)}, "loops": {}}
    # Each loop's own footprint: what building it allocated, plus the most its steps added on top.
    memory = {"studio": _figure(out, "studio_vram", lambda: studio_bytes + _peak_of(lambda: _studio_steps(trainer, BLOCK), sync)),
              "bare": _figure(out, "bare_vram", lambda: bare_bytes + _peak_of(lambda: [bare.step() for _ in range(BLOCK)], sync))}
    timing = run_paired(trainer, work / "run", {"bare": bare.step}, shares={"bare": 1.0}, warmup=BLOCK,
                        max_blocks=blocks, budget_s=float("inf"), min_blocks=blocks, block=BLOCK, sync=sync)
    out["timing"], out["ratio"] = timing, timing["ratios"]["bare"]
    if profile_dir is not None:  # where each loop's step time goes, operator by operator
        stem = f"gpu-profile-{name}-" + "-".join(o.split("=")[0].split(".")[-1] for o in overrides)
        out["profiles"] = {loop: _figure(out, f"{loop}_profile", lambda run=run, loop=loop: _profile(
            run, sync, Path(profile_dir) / f"{stem.rstrip('-')}-{loop}.txt"))
            for loop, run in (("studio", lambda: _studio_steps(trainer, BLOCK)),
                              ("bare", lambda: [bare.step() for _ in range(BLOCK)]))}
    # FLOPs last: a failure there leaves the timings and memory above in the result.
    fwd = _figure(out, "forward_flops", lambda: forward_flops(_forward_call(name, bare), _network(name, bare)))
    out.update(forward_flops=fwd, forward_tflop=round(fwd / 1e12, 3) if fwd else None)
    for loop in ("studio", "bare"):
        sec = timing["per_step"][loop]["median_ms"] / 1e3
        mfu = 3 * fwd / sec / (peak * 1e12) if peak and fwd else None
        vram = memory[loop]
        out["loops"][loop] = {"s_per_step": round(sec, 4), "it_per_s": round(1 / sec, 3),
                              "peak_vram_gb": round(vram / 2**30, 2) if vram is not None else None,
                              "mfu": round(mfu, 4) if mfu else None}
    from bench.estimate_check import estimated_vram_gb  # the memory estimate beside the measured peak

    out["loops"]["studio"]["estimated_vram_gb"] = _figure(out, "estimate", lambda: estimated_vram_gb(name, spec, trainer.cfg))
    del trainer, bare
    return out


def _profile(run, sync, path: Path) -> str:
    """One block of steps under torch.profiler; its operators by own device time (CPU time without CUDA)
    as a table in `path`, which is returned."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    sync()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        run()
        sync()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prof.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total",
                                              row_limit=40), encoding="utf-8")
    return str(path)


def _allocated() -> int:
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0


def _peak_of(run, sync) -> int:
    """How far the allocator's high-water mark rose above what was allocated before `run` (0 on the CPU)."""
    if not torch.cuda.is_available():
        run()
        return 0
    sync()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    sync()
    return torch.cuda.max_memory_allocated() - before


def _studio_steps(trainer, count: int) -> None:
    """A few steps through the studio's own Loop (its own run folder), to read its memory peak."""
    from studio.train.loop import Loop
    from studio.runfolder.progress import ProgressLog

    run_dir = Path(trainer.cfg.job.output_dir) / "memory"
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = trainer.total_steps
    trainer.total_steps = count
    progress = ProgressLog(run_dir, total_steps=count)
    try:
        Loop(trainer, run_dir, progress).run()
    finally:
        progress.close()
        trainer.total_steps = saved


def _forward_call(name: str, bare):
    if name == "sdxl":
        def call(unet):
            b = bare.batch
            time_ids = torch.cat([b["original_size"], b["crop_top_left"], b["target_size"]], dim=1).to(bare.dtype)
            unet(b["latents"].to(bare.dtype), torch.full((b["latents"].shape[0],), 500, device=bare.device),
                 b["prompt_embeds"].to(bare.dtype),
                 added_cond_kwargs={"text_embeds": b["pooled_prompt_embeds"].to(bare.dtype), "time_ids": time_ids})
        return call
    if name == "flux":
        def call(transformer):
            latents = bare.batch["latents"]
            bare.forward(transformer, latents, torch.full((latents.shape[0],), 0.5, device=bare.device), latents)
        return call
    return lambda model: model(**bare.batch, use_cache=False)


def gpu_table(result: dict) -> str:
    from bench.report import grid

    lines = [f"GPU bench on {result['environment'].get('cuda') or 'CPU (smoke)'} ({result['dtype']}, peak "
             f"{result['peak_bf16_tflops'] or '?'} TFLOP/s, gradient checkpointing "
             f"{'on' if result['gradient_checkpointing'] else 'off'})"]
    rows = []
    for name, w in result["workloads"].items():
        if "error" in w:
            rows.append([name, "error", w["error"][:60], "", "", ""])
            continue
        for loop, r in w["loops"].items():
            rows.append([name, loop, f"{r['it_per_s']:.3f}", f"{r['s_per_step']:.4f}",
                         f"{r['peak_vram_gb']:.2f}" if r["peak_vram_gb"] is not None else "-",
                         f"{r['mfu']:.3f}" if r["mfu"] is not None else "-"])
        rows.append([name, "studio/bare", f"{w['ratio']['ratio']:.3f}", "", "", ""])
        for figure, message in w.get("errors", {}).items():  # the timings above were kept
            rows.append([name, f"{figure} failed", message[:60], "", "", ""])
    lines.append(grid(rows, ["workload", "loop", "it/s", "s/step", "peak VRAM GB", "MFU"]))
    return "\n".join(lines)

