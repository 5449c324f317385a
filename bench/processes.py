"""`python -m bench.processes`: training speed per process count, on the CPU (gloo), in one run.

The tiny SD 1.5 preset is trained through `python -m studio train` three ways with the same global
batch of 2 and the same data order (so the runs do identical work):

    1 process  x batch 2      the single-process baseline
    2 processes x batch 1     the same steps split over two ranks (DDP through accelerate)

and, to show how far the data parallel scaling goes on this machine,

    2 processes x batch 2     twice the work per step

Each run's step rate is read from its own progress.jsonl (the clock between the first logged step
after warm-up and the last), so model loading and exports are not counted. Runs alternate
(A B C A B C ...) so a drifting machine load hits every variant alike. On 2 cores with one torch
thread per process, the ideal for "2 x 1 vs 1 x 2" is 2x the steps per second.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"1x2": (1, 2), "2x1": (2, 1), "2x2": (2, 2)}  # processes x per-process batch


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def steps_per_second(progress: Path, warmup: int) -> float:
    steps = [json.loads(line) for line in progress.read_text().splitlines() if '"loss"' in line]
    timed = [s for s in steps if s["step"] > warmup]
    first, last = timed[0], timed[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def run_variant(name: str, home: Path, steps: int, warmup: int) -> float:
    processes, batch = VARIANTS[name]
    run = home / "runs" / f"{name}-{time.time_ns()}"
    sets = {"model.device": "cpu", "training.max_steps": steps, "training.batch_size": batch,
            "distributed.num_processes": processes, "distributed.main_process_port": _port(),
            "logging.logging_steps": 1, "sampling.every_steps": 0, "sampling.at_end": "false",
            "checkpointing.save_steps": 10_000, "job.output_dir": str(run), "job.name": run.name,
            "adapter.verify_exports": "false"}
    argv = [sys.executable, "-m", "studio", "train", "presets/tiny-sd15-lora.json", "--no-progress"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    env = {**os.environ, "STUDIO_HOME": str(home), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return steps_per_second(run / "progress.jsonl", warmup)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.processes", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="steps per run (default 60)")
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the timing (default 10)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating (default 2)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-processes-") as tmp:
        for _ in range(args.rounds):
            for name in VARIANTS:
                rates[name].append(run_variant(name, Path(tmp), args.steps, args.warmup))
    median = {name: statistics.median(v) for name, v in rates.items()}
    result = {
        "what": "tiny SD 1.5 LoRA on the CPU (gloo), steps/s from progress.jsonl after warm-up, median of rounds",
        "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "steps_per_s": {k: [round(x, 3) for x in v] for k, v in rates.items()},
        "items_per_s": {k: round(median[k] * VARIANTS[k][0] * VARIANTS[k][1], 3) for k in VARIANTS},
        "speedup_2x1_over_1x2": round(median["2x1"] / median["1x2"], 3),
        "throughput_2x2_over_1x2": round(median["2x2"] * 2 / median["1x2"], 3),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu-processes.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'variant':8} {'steps/s':>9} {'items/s':>9}")
    for k in VARIANTS:
        print(f"{k:8} {median[k]:9.3f} {result['items_per_s'][k]:9.3f}")
    print(f"same global batch, 2 processes vs 1: {result['speedup_2x1_over_1x2']}x steps/s; "
          f"2 x batch 2 vs 1 x batch 2: {result['throughput_2x2_over_1x2']}x items/s "
          f"(load average {result['load_average'][0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
