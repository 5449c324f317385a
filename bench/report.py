"""Results: one JSON file (everything measured, machine and versions) and a plain-text table."""
from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def bench_settings(threads: int, home: Path | None = None):
    """Torch threads (and STUDIO_HOME) for a bench run, put back afterwards: the bench also runs
    inside the test process, where the next test expects its own settings."""
    import torch

    saved_threads, saved_home = torch.get_num_threads(), os.environ.get("STUDIO_HOME")
    torch.set_num_threads(threads)
    if home is not None:
        os.environ["STUDIO_HOME"] = str(home)
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        if saved_home is None:
            os.environ.pop("STUDIO_HOME", None)
        else:
            os.environ["STUDIO_HOME"] = saved_home


def environment(threads: int | None = None) -> dict:
    import torch

    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "torch_threads": threads if threads is not None else torch.get_num_threads(),
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "load_average": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for name in ("torch", "diffusers", "transformers", "peft", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_results(result: dict, out_dir: Path, stem: str, table: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, text_path = out_dir / f"{stem}.json", out_dir / f"{stem}.txt"
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text_path.write_text(table + "\n", encoding="utf-8")
    return json_path, text_path


def _fmt(value, spec: str = "", none: str = "-") -> str:
    if value is None:
        return none
    return format(value, spec) if spec else str(value)


def grid(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]])


STEP_LABELS = {"studio": "studio (build_trainer + Loop, from cache)", "bare": "bare PyTorch+PEFT, cached latents",
               "bare_vae": "bare PyTorch+PEFT, VAE+text encoder every step"}


def cpu_table(result: dict) -> str:
    w, timing = result["workload"], result["step_timing"]
    head = (f"Tiny SD 1.5 LoRA bench ({w['adapter']}, batch {w['batch_size']}, {w['resolution']} px, "
            f"{w['items']} cached items, {result['environment']['torch_threads']} torch thread(s), "
            f"load {result['environment']['load_average'][0]})")
    rows = []
    for name, s in timing["per_step"].items():
        ratio = timing["ratios"].get(name, {})
        paired = timing.get("studio_paired_ms", {}).get(name)
        rows.append([STEP_LABELS.get(name, name), _fmt(s["median_ms"], ".2f"), _fmt(s["median_cpu_ms"], ".2f"),
                     _fmt(s["steps"]), _fmt(paired, ".2f"), "-" if name == "studio" else _fmt(ratio.get("ratio"), ".3f")])
    parts = [head, "", "Median optimizer-step time (same process; each loop takes turns with the studio in its phase):",
             grid(rows, ["loop", "wall ms", "cpu ms", "steps", "studio ms, same phase", "studio/loop"])]
    for name, r in timing["ratios"].items():
        ci = r.get("ratio_ci95")
        parts.append(f"  studio / {name}: {_fmt(r['ratio'], '.3f')} (95% CI {ci[0]:.3f}-{ci[1]:.3f}, halves "
                     f"{r['ratio_halves'][0]:.3f} / {r['ratio_halves'][1]:.3f}, cpu-time {_fmt(r.get('cpu_ratio'), '.3f')})"
                     if ci else f"  studio / {name}: {_fmt(r['ratio'], '.3f')}")
    target = result.get("target")
    if target:
        parts.append(f"  target studio / bare <= {target['max_ratio']}: {'PASS' if target['met'] else 'FAIL'}")
    parts += ["", "Fresh processes (command to first step, memory):", launch_table(result.get("launches", {}))]
    return "\n".join(parts)


def launch_table(launches: dict) -> str:
    labels = {"studio": "python -m studio train (cache)", "bare": "python -m bench.bare --mode cached",
              "bare_vae": "python -m bench.bare --mode vae", "queue": "python -m studio queue run (same job)"}
    rows = []
    for name, r in launches.items():
        if not isinstance(r, dict) or name == "dispatch":
            continue
        if "skipped" in r or "error" in r and r.get("first_step_s") is None:
            rows.append([labels.get(name, name), r.get("skipped") or "error: " + str(r.get("error"))[-60:], "", "", ""])
            continue
        rows.append([labels.get(name, name), _fmt(r.get("first_step_s"), ".2f"), _fmt(r.get("total_s"), ".2f"),
                     _fmt(r.get("rss_to_first_step_mb"), ".0f"), _fmt(r.get("peak_rss_mb"), ".0f")])
    header = ["command", "first step s", "total s", "peak RSS to 1st step MB", "peak RSS MB"]
    text = grid(rows, header) if rows else "(none)"
    d = launches.get("dispatch")
    if d:
        text += (f"\n  queue dispatch overhead: its trainer started {_fmt(d.get('spawn_s'), '.2f')} s after `queue run`; "
                 f"first step {_fmt(d.get('first_step_delta_s'), '+.2f')} s vs a direct `studio train` (one sample each: "
                 "process start-up noise is larger than this difference)")
    return text
