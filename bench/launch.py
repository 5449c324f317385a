"""Fresh-process measurements: time from command to first optimizer step, peak RSS, and the queue's
dispatch overhead. Each command is started the way a user starts it; the first step is read from
the file the process writes (`progress.jsonl` for the studio, the bare loop's JSON lines).

Peak RSS is the kernel's high-water mark of each process's memory (`VmHWM` in /proc/PID/status,
read every 50 ms; the largest process of the tree counts, e.g. the queue's trainer). It is kept
twice: up to the first optimizer step (loading and the first step) and for the whole run (exports
included). Not `ru_maxrss` from `wait4`: on Linux it also counts the forked copy of this (large)
benchmark process from before `exec`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

POLL_S = 0.05


@dataclass
class Launch:
    name: str
    argv: list[str]
    progress: Path  # JSON lines; the first record with a "loss" is the first optimizer step
    log: Path
    env: dict = field(default_factory=dict)
    timeout_s: float = 240.0


def first_step_time(path: Path) -> float | None:
    """Wall-clock time (epoch seconds) of the first optimizer-step record, once it is written."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in record and "event" not in record:
                return float(record["time"])
    return None


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def run_launch(spec: Launch, spawn_marker: str | None = None) -> dict:
    """Run to the end; `spawn_marker`: note when a descendant whose command line holds it appears
    (the queue's trainer), from its kernel start time."""
    env = {**os.environ, **spec.env}
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(spec.log, "wb") as log:
        proc = subprocess.Popen(spec.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path.cwd())
    handle = psutil.Process(proc.pid)
    first, spawned, hwm, first_hwm, timed_out = None, None, {}, 0, False
    deadline = t0 + spec.timeout_s
    while proc.poll() is None:
        for p in _tree(handle):
            hwm[p.pid] = max(hwm.get(p.pid, 0), _vm_hwm(p.pid))
            if spawn_marker and spawned is None and p.pid != proc.pid:
                try:
                    if spawn_marker in " ".join(p.cmdline()):
                        spawned = p.create_time()
                except psutil.Error:
                    pass
        if first is None:
            first = first_step_time(spec.progress)
            first_hwm = max(hwm.values(), default=0)
        if time.time() > deadline:
            for p in reversed(_tree(handle)):  # this launch's own processes only, by pid
                try:
                    p.kill()
                except psutil.Error:
                    pass
            proc.wait()
            timed_out = True
            break
        time.sleep(POLL_S)
    status = "timeout" if timed_out else proc.returncode
    if first is None:
        first = first_step_time(spec.progress)
    peak = max(hwm.values(), default=0)
    result = {"command": " ".join(_short(a) for a in spec.argv), "exit": status,
              "first_step_s": round(first - t0, 2) if first else None,
              "total_s": round(time.time() - t0, 2),
              "peak_rss_mb": round(peak / 1024, 1) if peak else None,  # VmHWM is in KiB
              "rss_to_first_step_mb": round(first_hwm / 1024, 1) if first and first_hwm else None,
              "log": str(spec.log)}
    if spawn_marker:
        result["spawn_s"] = round(spawned - t0, 2) if spawned else None
    if status != 0:
        result["error"] = _tail(spec.log)
    return result


def _vm_hwm(pid: int) -> int:
    """Peak resident set of a live process, KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _short(arg: str) -> str:
    return arg if len(arg) < 80 else arg[:77] + "..."


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def studio_command(config: Path, overrides: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "studio", "train", str(config), "--no-progress"]
    for item in overrides:
        argv += ["--set", item]
    return argv


def queue_dispatch(work: Path, config: Path, overrides: list[str], env: dict, timeout_s: float) -> dict:
    """`queue add` then `queue run --until-empty`: time to the trainer's start (`spawn_s`) and to its
    first step. The queue keeps its database in STUDIO_HOME, so a fresh home keeps users' queues apart."""
    home = work / "queue-home"
    env = {**env, "STUDIO_HOME": str(home)}
    add = [sys.executable, "-m", "studio", "queue", "add", str(config), "--name", "bench"]
    for item in overrides:
        add += ["--set", item]
    done = subprocess.run(add, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        return {"error": f"queue add failed ({done.returncode}): {done.stderr.strip()[-400:]}"}
    run_dir = next(item.split("=", 1)[1] for item in overrides if item.startswith("job.output_dir="))
    spec = Launch("queue", [sys.executable, "-m", "studio", "queue", "run", "--until-empty"],
                  Path(run_dir) / "progress.jsonl", work / "logs" / "queue.log", env, timeout_s)
    return run_launch(spec, spawn_marker="studio train")
