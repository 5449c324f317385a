"""Training from the dataset cache against training from raw images, on the tiny SD 1.5 model.

    python -m bench.cache_bench [--images 32] [--resolution 256] [--steps 30] [--batch-size 4] [--out FILE]

Reports the cache build rate (items/s, encoding only: the model load is not counted) and the
training rate (optimizer steps/s between the first and the last logged step, so loading and the
first warm-up step are not counted) for the same config with `data.cache_mode` off and on. Every run
goes through the studio's own loop (`run_training`), one progress record per step; raw and cached
runs alternate `--repeats` times and the medians are compared.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def write_images(folder: Path, count: int, size: int) -> None:
    """Random pictures in three aspect ratios (so bucketing is exercised), each with a caption."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shapes = [(size, size), (size * 3 // 2, size), (size, size * 3 // 2)]
    for i in range(count):
        w, h = shapes[i % 3]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i:04d}.png")
        (folder / f"img{i:04d}.txt").write_text(f"picture {i}, random noise, shape {i % 3}", encoding="utf-8")


def bench_config(data_dir: Path, args, cache_mode: str) -> dict:
    return {
        "model": {"family": "sd15", "path": args.model, "device": args.device},
        "data": {"path": str(data_dir), "resolution": args.resolution, "bucket_step": 64, "cache_mode": cache_mode,
                 "vae_batch_size": args.vae_batch_size},
        "adapter": {"type": "lora", "rank": 4, "alpha": 4, "verify_exports": False},
        "training": {"learning_rate": 1e-4, "batch_size": args.batch_size, "max_steps": args.steps, "seed": 0},
        "scheduler": {"name": "constant"},
        "memory": {"mixed_precision": args.precision, "gradient_checkpointing": False},
        "dataloader": {"num_workers": args.workers},
        "checkpointing": {"save_strategy": "no"},
        "logging": {"tensorboard": False, "logging_steps": 1},
        "sampling": {"prompts": [], "at_end": False},
    }


def steps_per_second(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    if records[-1].get("event") != "done" or len(steps) < 3:
        raise RuntimeError(f"benchmark run failed: {records[-1]}")
    first, last = steps[0], steps[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def train_rate(cfg, run_dir: Path) -> tuple[float, float]:
    """(steps/s of wall time, CPU seconds of the whole run). CPU time hardly depends on what else the
    machine runs, so on a shared box it shows the work saved even when wall-clock rates are noisy."""
    from studio.commands.train import run_training

    run_dir.mkdir(parents=True)
    cpu = time.process_time()
    if run_training(cfg, run_dir) != 0:
        raise RuntimeError(f"training failed; see {run_dir / 'progress.jsonl'}")
    return steps_per_second(run_dir), time.process_time() - cpu


def run(args) -> dict:
    from statistics import median

    from studio.config import finalize_job, load_config
    from studio.commands.preprocess import run_preprocess

    work = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    os.environ.setdefault("STUDIO_HOME", str(work / "home"))
    data_dir = work / "images"
    write_images(data_dir, args.images, args.resolution)
    results: dict = {"images": args.images, "resolution": args.resolution, "batch_size": args.batch_size,
                     "steps": args.steps, "device": args.device, "precision": args.precision, "repeats": args.repeats}
    raw = finalize_job(load_config(bench_config(data_dir, args, "off")), name="raw")
    cached = finalize_job(load_config(bench_config(data_dir, args, "auto")), name="cached")

    pre_dir = work / "preprocess"
    pre_dir.mkdir()
    started = time.time()
    if run_preprocess(cached, pre_dir) != 0:
        raise RuntimeError(f"preprocessing failed; see {pre_dir / 'progress.jsonl'}")
    done = json.loads((pre_dir / "progress.jsonl").read_text().splitlines()[-1])
    results["cache_items_per_s"] = done["items_per_s"]
    results["cache_build_total_s"] = round(time.time() - started, 2)  # incl. scan and model load

    rates: dict[str, list[tuple[float, float]]] = {"raw": [], "cached": []}
    for repeat in range(args.repeats):  # alternate, so a busy machine slows both alike
        rates["raw"].append(train_rate(raw, work / f"raw-{repeat}"))
        rates["cached"].append(train_rate(cached, work / f"cached-{repeat}"))
    for name, values in rates.items():
        results[f"{name}_steps_per_s"] = round(median(v for v, _ in values), 3)
        results[f"{name}_steps_per_s_all"] = [round(v, 3) for v, _ in values]
        results[f"{name}_cpu_s_per_run"] = round(median(c for _, c in values), 1)
    results["speedup"] = round(results["cached_steps_per_s"] / results["raw_steps_per_s"], 2)
    results["cpu_saved_s_per_step"] = round((results["raw_cpu_s_per_run"] - results["cached_cpu_s_per_run"])
                                            / args.steps, 3)
    results["work_dir"] = str(work)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cache_bench", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--vae-batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--model", default="tiny:sd15")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--precision", default="no", choices=["auto", "no", "fp16", "bf16"])
    p.add_argument("--repeats", type=int, default=3, help="alternating raw/cached runs; the median is reported")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = run(args)
    print(f"cache build:           {results['cache_items_per_s']} items/s "
          f"({results['cache_build_total_s']} s with scan and model load)")
    print(f"training, raw images:  {results['raw_steps_per_s']} steps/s (median of {results['raw_steps_per_s_all']})")
    print(f"training, from cache:  {results['cached_steps_per_s']} steps/s (median of "
          f"{results['cached_steps_per_s_all']}; x{results['speedup']})")
    print(f"CPU time per run:      raw {results['raw_cpu_s_per_run']} s, cached {results['cached_cpu_s_per_run']} s "
          f"({results['cpu_saved_s_per_step']} s saved per step)")
    print(json.dumps(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
