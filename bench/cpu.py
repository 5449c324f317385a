"""The CPU bench on the tiny SD 1.5 model: paired step timing (studio vs the bare floor vs the bare
loop encoding with the VAE every step), then fresh processes for time-to-first-step, peak RSS and
the queue's dispatch overhead. The whole run keeps to a time budget (default 270 s): launches that
would not fit are reported as skipped rather than overrunning.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

MAX_RATIO = 1.05  # the target: studio step time <= 1.05 x the bare loop's
PHASES = {"bare": 0.7, "bare_vae": 0.3}  # share of the timed steps paired with each contender


def run_cpu_bench(out_dir: Path, budget_s: float = 270.0, threads: int = 1, quick: bool = False,
                  launches: bool = True, keep: bool = False, overrides: list[str] = ()) -> dict:
    """Run everything, print the table, write `<out_dir>/cpu-tiny-sd15[-quick].json` and `.txt`."""
    from bench.report import bench_settings, environment

    work = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    try:
        # One torch thread: several OpenMP threads per process stall in their barriers when other
        # processes hold the cores (a tiny step went from 0.2 s to 5-10 s on a loaded 2-core box).
        with bench_settings(threads, home=work / "home"):
            return _run(work, out_dir, budget_s, threads, quick, launches, list(overrides), environment(threads))
    finally:
        if keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, out_dir: Path, budget_s: float, threads: int, quick: bool, launches: bool,
         overrides: list[str], env: dict) -> dict:
    from bench.report import cpu_table, write_results

    started = time.perf_counter()
    warmup, max_blocks = (2, 8) if quick else (5, 200)
    result = {"kind": "cpu-tiny-sd15", "environment": env}
    result.update(_step_timing(work, warmup, max_blocks, budget_s, quick, overrides))
    workload = result.pop("_workload")
    if launches:
        left = budget_s - (time.perf_counter() - started)
        result["launches"] = _launches(work, workload, threads, left, quick)
    result["environment"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(time.perf_counter() - started, 1)
    table = cpu_table(result)
    json_path, text_path = write_results(result, out_dir, "cpu-tiny-sd15-quick" if quick else "cpu-tiny-sd15", table)
    result["files"] = [str(json_path), str(text_path)]
    print(table)
    print(f"\nresults: {json_path}  ({result['seconds']} s)")
    return result


def _step_timing(work: Path, warmup: int, max_blocks: int, budget_s: float, quick: bool, overrides: list[str]) -> dict:
    from bench.bare import BareLoop
    from bench.timing import run_paired
    from bench.workload import prepare

    t0 = time.perf_counter()
    w = prepare(work, steps=warmup + max_blocks + 2 * len(PHASES), extra=overrides)
    bare = BareLoop(w.model_dir, w.data, w.settings, mode="cached")
    bare_vae = BareLoop(w.model_dir, w.data, w.settings, mode="vae")
    bare_params = sum(p.numel() for p in bare.params)
    if bare_params != w.info["trainable_params"]:
        raise RuntimeError(f"bench: the bare adapter has {bare_params} trainable parameters, the studio's "
                           f"{w.info['trainable_params']}: the loops would not train the same thing")
    setup_s = time.perf_counter() - t0
    # About half the budget for steps; the fresh-process launches need the rest.
    timing_budget = 15.0 if quick else max(30.0, 0.45 * budget_s - setup_s)
    timing = run_paired(w.trainer, work / "run-studio", {"bare": bare.step, "bare_vae": bare_vae.step},
                        shares=PHASES, warmup=warmup, max_blocks=max_blocks, budget_s=timing_budget,
                        min_blocks=4 if quick else 20)
    timing["setup_s"] = round(setup_s, 1)
    ratio = timing["ratios"]["bare"]["ratio"]
    return {"workload": w.info, "step_timing": timing, "_workload": w,
            "target": {"max_ratio": MAX_RATIO, "ratio": ratio, "met": ratio is not None and ratio <= MAX_RATIO}}


def _launches(work: Path, w, threads: int, budget_s: float, quick: bool) -> dict:
    """Studio CLI, bare loop (cached, VAE), queue: each as a fresh process, two optimizer steps each."""
    from bench.launch import Launch, queue_dispatch, run_launch, studio_command
    from bench.workload import PRESET, job_overrides
    from studio.data.image_source import resolve_data_path

    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    data_file = w.write_data(work / "bare_data.safetensors")
    data_path = str(resolve_data_path(w.cfg.data.path))
    same_job = [f"model.path={w.model_dir}", f"data.path={data_path}"]  # absolute: the queue has its own home

    def studio_overrides(name: str) -> list[str]:
        return job_overrides(work / name, steps=2, logging_steps=1, extra=w.overrides) + same_job

    def bare_launch(mode: str, timeout: float) -> Launch:
        argv = [sys.executable, "-m", "bench.bare", "--mode", mode, "--model", w.model_dir, "--data", str(data_file),
                "--settings", json.dumps(w.settings), "--steps", "2", "--progress", str(work / f"bare-{mode}.jsonl")]
        return Launch(f"bare_{mode}", argv, work / f"bare-{mode}.jsonl", work / "logs" / f"bare-{mode}.log", env,
                      timeout)

    # Each entry takes the seconds it may use (what is left of the budget): a hung process cannot overrun.
    plan = [("studio", lambda left: run_launch(Launch(
                "studio", studio_command(PRESET, studio_overrides("run-cli")), work / "run-cli" / "progress.jsonl",
                work / "logs" / "studio.log", env, left))),
            ("bare", lambda left: run_launch(bare_launch("cached", left))),
            ("bare_vae", lambda left: run_launch(bare_launch("vae", left))),
            ("queue", lambda left: queue_dispatch(work, PRESET, studio_overrides("run-queue"), env, timeout_s=left))]
    if quick:  # the smoke run checks the launch code on the leanest process only
        plan = [item for item in plan if item[0] == "bare"]
    out, started, slowest = {}, time.perf_counter(), 0.0
    for name, measure in plan:
        left = budget_s - (time.perf_counter() - started)
        if left < slowest * (2.2 if name == "queue" else 1.2):  # the queue starts two processes
            out[name] = {"skipped": f"time budget ({left:.0f} s left)"}
            continue
        t = time.perf_counter()
        out[name] = measure(max(30.0, left))
        slowest = max(slowest, time.perf_counter() - t)
    q, s = out.get("queue", {}), out.get("studio", {})
    if q.get("first_step_s") is not None:
        delta = q["first_step_s"] - s["first_step_s"] if s.get("first_step_s") is not None else None
        out["dispatch"] = {"spawn_s": q.get("spawn_s"), "first_step_delta_s": round(delta, 2) if delta is not None else None}
    return out
