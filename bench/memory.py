"""The cost of each memory engine: it/s and peak VRAM of the same studio job with and without it.

    python -m bench.memory CONFIG.json [--set section.key=value ...] [--steps N] [--variants a,b,...]

Every variant runs in a fresh process (so one variant's allocations never count in another's peak):
the studio's `build_trainer` loads CONFIG with the variant's settings on top, then the studio's `Loop`
runs 2 warm-up steps and N timed ones. Reported: seconds per step, it/s, and peak VRAM (the allocator's
high-water mark from loading to the last step; 0 on the CPU). A variant the machine cannot run (bitsandbytes
and float8 on a CPU) is reported with its refusal. Results: bench/results/memory-<config name>.json / .txt.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# name -> settings on top of the job (each one engine; `baseline` = the job as given)
VARIANTS = {
    "baseline": [],
    "int8-torchao": ["model.quantization=8bit", "model.quantization_backend=torchao"],
    "int8-bnb": ["model.quantization=8bit", "model.quantization_backend=bitsandbytes"],
    "nf4-bnb": ["model.quantization=4bit", "model.quantization_backend=bitsandbytes"],
    "fp8": ["model.fp8_base=true", "model.quantization=none"],
    "no-checkpointing": ["memory.gradient_checkpointing=false", "memory.activation_offload=false",
                         "memory.blocks_to_swap=0"],
    "checkpoint-every-2nd": ["memory.gradient_checkpointing_interval=2"],
    "activation-offload": ["memory.activation_offload=true", "memory.gradient_checkpointing=true"],
    "swap-8-blocks": ["memory.blocks_to_swap=8", "memory.gradient_checkpointing=true"],
    "fused-backward": ["optimizer.fused_backward_pass=true", "training.max_grad_norm=0",
                       "training.gradient_accumulation_steps=1"],
}
WARMUP = 2


def one_variant(config: str, overrides: list[str], steps: int, work: Path) -> dict:
    """Load and train in this process; the numbers of one variant."""
    import torch
    from accelerate import Accelerator

    from studio.config import ConfigError, finalize_job, load_config
    from studio.runfolder.device import accelerator_options, check_device, mixed_precision
    from studio.runfolder.progress import ProgressLog
    from studio.train.loop import Loop
    from studio.train.setup import build_trainer

    try:
        cfg = finalize_job(load_config(config, [*overrides, f"job.output_dir={work}",
                                                 "checkpointing.save_strategy=no", "sampling.at_end=false",
                                                 "sampling.every_steps=0", "evaluation.strategy=no"]))
        check_device(cfg)
    except ConfigError as err:
        return {"refused": str(err).strip()}
    cuda = torch.cuda.is_available() and cfg.model.device != "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = build_trainer(cfg, Accelerator(mixed_precision=mixed_precision(cfg), **accelerator_options(cfg)))
    timings = []
    for count in (WARMUP, steps):
        trainer.total_steps, trainer.epochs = count, 10**6
        run_dir = work / f"steps-{count}-{len(timings)}"
        run_dir.mkdir(parents=True)
        progress = ProgressLog(run_dir, total_steps=count)
        loop = Loop(trainer, run_dir, progress)
        sync()
        started = time.perf_counter()
        loop.run()
        sync()
        timings.append(time.perf_counter() - started)
        progress.close()
    sec = timings[-1] / steps
    return {"s_per_step": round(sec, 4), "it_per_s": round(1 / sec, 3),
            "peak_vram_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else 0.0,
            "loss": loop.last_loss}


def run(config: str, overrides: list[str], steps: int, variants: list[str], out_dir: Path) -> dict:
    result = {"config": config, "overrides": overrides, "steps": steps, "variants": {}}
    for name in variants:
        with tempfile.TemporaryDirectory(prefix=f"studio-memory-bench-{name}-") as work:
            cmd = [sys.executable, "-m", "bench.memory", config, "--one", work, "--steps", str(steps),
                   *[a for o in [*overrides, *VARIANTS[name]] for a in ("--set", o)]]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
            answer = Path(work) / "variant.json"
            result["variants"][name] = (json.loads(answer.read_text()) if answer.exists() else
                                        {"error": (done.stderr or done.stdout)[-1500:]})
    lines = [f"{'variant':<22} {'s/step':>8} {'it/s':>8} {'peak VRAM GB':>13}"]
    for name, r in result["variants"].items():
        if "s_per_step" in r:
            lines.append(f"{name:<22} {r['s_per_step']:>8} {r['it_per_s']:>8} {r['peak_vram_gb']:>13}")
        else:
            lines.append(f"{name:<22} {(r.get('refused') or r.get('error', '')).splitlines()[-1][:80]}")
    table = "\n".join(lines)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"memory-{Path(config).stem}"
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{stem}.txt").write_text(table + "\n")
    print(table)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="a config or preset JSON (e.g. presets/flux-dev-lora-24gb.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list among {', '.join(VARIANTS)}")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: one variant in this process
    args = p.parse_args(argv)
    if args.one:
        answer = one_variant(args.config, args.overrides, args.steps, args.one)
        (args.one / "variant.json").write_text(json.dumps(answer) + "\n")
        return 0
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; allowed: {', '.join(VARIANTS)}")
    run(args.config, args.overrides, args.steps, args.variants.split(","), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
