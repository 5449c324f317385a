"""Per-step timing (FIELDS G06 `step_profiling`) and per-layer gradient norms (G03 `log_heavy_every`),
both written into the run folder as JSON lines for the Monitor and for whoever tunes the run.

profile.jsonl: {"step", "data_s", "forward_s", "backward_s", "optimizer_s", "other_s", "total_s"} per
optimizer step (forward/backward summed over the step's micro-batches; "data" is the wait for the next
batch; "other" is logging, checkpoints, samples and evaluation after the step), plus "microbatches": one
{"forward_s", "backward_s"} per micro-batch with G07 `track_microbatches`. On CUDA
each lap first waits for the GPU (torch.cuda.synchronize), otherwise the asynchronous kernels would be
billed to whichever phase happens to wait; that wait costs speed, which is why profiling is off by default.
grad_norms.jsonl: {"step", "norms": {layer: L2 norm of its adapter gradients}} every N steps.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch


class NoProfile:
    """Stands in when step_profiling is off: the loop calls the same methods at no cost."""

    def restart(self) -> None:
        pass

    def lap(self, phase: str) -> None:
        pass

    def end_step(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class StepProfiler(NoProfile):
    PHASES = ("data", "forward", "backward", "optimizer", "other")

    def __init__(self, run_dir: Path, device: torch.device, micro: bool = False):
        self.file = open(Path(run_dir) / "profile.jsonl", "a", encoding="utf-8")
        self.micro: list[dict] | None = [] if micro else None  # per micro-batch forward/backward
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.totals = dict.fromkeys(self.PHASES, 0.0)
        self.last = time.perf_counter()

    def restart(self) -> None:
        self.sync()
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.totals[phase] += now - self.last
        if self.micro is not None and phase == "forward":
            self.micro.append({"forward_s": round(now - self.last, 6)})
        elif self.micro is not None and phase == "backward" and self.micro:
            self.micro[-1]["backward_s"] = round(now - self.last, 6)
        self.last = now

    def end_step(self, step: int) -> None:
        record = {"step": step, **{f"{k}_s": round(v, 6) for k, v in self.totals.items()}}
        record["total_s"] = round(sum(self.totals.values()), 6)
        if self.micro is not None:
            record["microbatches"], self.micro = self.micro, []
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.totals = dict.fromkeys(self.PHASES, 0.0)

    def close(self) -> None:
        self.file.close()


def make_profiler(cfg, run_dir: Path, device: torch.device) -> NoProfile:
    log = cfg.logging
    return StepProfiler(run_dir, device, log.track_microbatches) if log.step_profiling else NoProfile()


# The adapter's own parameter names after the layer they adapt (PEFT: lora_A/lora_B/lora_magnitude_vector,
# LyCORIS: hada_*, lokr_*, oft_*, ...); gradients of one layer are summed into one norm.
_ADAPTER_PART = re.compile(r"\.(lora_\w+|hada_\w+|lokr_\w+|oft_\w+|boft_\w+|ia3_\w+|[a-z]+_w\d\w*)(\..*)?$")


def layer_grad_norms(named: dict[str, torch.nn.Parameter]) -> dict[str, float]:
    squares: dict[str, torch.Tensor] = {}
    for name, param in named.items():
        if param.grad is None:
            continue
        layer = _ADAPTER_PART.sub("", name)
        value = param.grad.detach().float().pow(2).sum()
        squares[layer] = squares[layer] + value if layer in squares else value
    return {layer: float(total.sqrt()) for layer, total in squares.items()}


def log_layer_grad_norms(run_dir: Path, step: int, named: dict, track=None) -> None:
    """Into grad_norms.jsonl, and as `grad_norm/<layer>` through `track(values, step)` (the trackers)."""
    norms = layer_grad_norms(named)
    with open(Path(run_dir) / "grad_norms.jsonl", "a", encoding="utf-8") as file:
        file.write(json.dumps({"step": step, "norms": norms}) + "\n")
    if track is not None:
        track({f"grad_norm/{layer}": norm for layer, norm in norms.items()}, step)
