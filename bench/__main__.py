"""`python -m bench`: the studio against a bare PyTorch + PEFT loop, ratios taken in one run.

    python -m bench                 # CPU, tiny SD 1.5: table on stdout, JSON in bench/results/
    python -m bench --quick         # a few steps, for a smoke test (results named *-quick)
    python -m bench --gpu           # SDXL-size UNet and Llama-size SFT on a CUDA GPU (see bench/gpu.py)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", action="store_true", help="run the GPU variant (needs CUDA)")
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test; figures are not meaningful)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"folder for the JSON and table (default {RESULTS})")
    p.add_argument("--budget", type=float, default=270.0,
                   help="CPU: seconds the whole bench may take; what does not fit is reported as skipped")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU: torch threads for every loop (default 1: the box is shared; all loops get the same)")
    p.add_argument("--no-launch", action="store_true",
                   help="CPU: step timing only (no fresh-process first-step / RSS / queue measurements)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="CPU: change the studio job (e.g. dataloader.num_workers=2); the bare loop must still "
                        "be able to mirror it")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder (runs, logs, cache)")
    g = p.add_argument_group("GPU variant")
    g.add_argument("--workloads", default="sdxl,llm",
                   help="comma list among sdxl, llm, flux, each optionally with studio variants after a colon "
                        "joined by + (e.g. sdxl:compile+channels_last, llm:liger; see bench/gpu.py VARIANTS); "
                        "default sdxl,llm")
    g.add_argument("--steps", type=int, default=30, help="timed steps per loop (default 30)")
    g.add_argument("--peak-tflops", type=float, default=None,
                   help="the GPU's dense bf16 peak, for model FLOP utilisation (default: known GPUs by name)")
    g.add_argument("--no-gradient-checkpointing", action="store_true",
                   help="train without gradient checkpointing (faster, far more memory; may run out on 80 GB)")
    g.add_argument("--profile", action="store_true",
                   help="also profile one block of steps per loop: operator tables gpu-profile-*.txt in --out")
    g.add_argument("--size", choices=["full", "smoke"], default="full",
                   help="`smoke`: tiny shapes, runs on the CPU too (tests the GPU code path only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.gpu:
        from bench.gpu import GpuUnavailable, run_gpu_bench

        try:
            run_gpu_bench(args.out, workloads=[w.strip() for w in args.workloads.split(",") if w.strip()],
                          steps=args.steps, peak_tflops=args.peak_tflops, size=args.size,
                          gradient_checkpointing=not args.no_gradient_checkpointing, profile=args.profile)
        except GpuUnavailable as err:
            print(f"bench --gpu: {err}", file=sys.stderr)
            return 2
        return 0
    import time

    import psutil

    from bench.cpu import run_cpu_bench

    started_ago = time.time() - psutil.Process().create_time()  # interpreter start and imports count too
    result = run_cpu_bench(args.out, budget_s=args.budget - started_ago, threads=args.threads, quick=args.quick,
                           launches=not args.no_launch, keep=args.keep, overrides=args.overrides)
    return 0 if args.quick or result["target"]["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
