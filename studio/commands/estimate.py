"""`python -m studio estimate CONFIG.json`: which layers matter most for this data (FIELDS J04, A10/A11).

A LoRA goes on every candidate layer of the family's network (its `estimate_candidates()`, else every
Linear of `trainable_module()`), a few batches of the training data run forward and backward with the
family's own loss, and the layers are ranked by the norm of their adapter's gradient (accumulated over
the batches). LoRA's B starts at zero, so at the start only B receives a gradient: its norm is how
strongly the loss pulls on that layer's output. Works for every family through the ModelFamily interface.

Written into the run folder (`job.output_dir`):
  target_modules.json   a partial config, `{"adapter": {"target_modules": [top-k layer paths]}}`, that the
                        Train form (or `load_config`) merges like a preset
  estimate_report.json  every layer with its gradient norm, the totals per projection name, and the
                        self/cross attention split when the family has one
plus progress.jsonl records ending with {"event": "done"}.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch

from studio.runfolder.events import Event

log = logging.getLogger("studio.estimate")
DEFAULT_BATCHES, DEFAULT_TOP_K, ESTIMATE_RANK = 4, 16, 8


def estimate_config(cfg, candidates: list[str]):
    """A copy of `cfg` with a small plain LoRA on every candidate (the user's adapter choice aside)."""
    est = cfg.model_copy(deep=True)
    a = est.adapter
    a.type, a.backend, a.rank, a.alpha, a.dropout, a.bias = "lora", "peft", ESTIMATE_RANK, ESTIMATE_RANK, 0.0, "none"
    a.target_modules, a.self_target_modules, a.cross_target_modules = list(candidates), [], []
    a.attention_type, a.train_text_encoder, a.init_from, a.network_args = "both", False, "", ""
    return est


def gradient_norms(family, handle, batches: int, seed: int, on_batch=None) -> dict[str, float]:
    """Per adapted layer: sqrt of the summed squared gradient norms of its adapter over `batches` batches."""
    from studio.data.sampler import EpochSampler
    from studio.adapters.peft_backend import tuner_layers

    dataset = family.train_dataset("train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=family.cfg.training.batch_size, collate_fn=family.collate,
                                         sampler=EpochSampler(len(dataset), seed, True))
    layers = [(name, layer) for name, layer in tuner_layers(handle.module) if hasattr(layer, "base_layer")]
    squared: dict[str, float] = defaultdict(float)
    generator = torch.Generator().manual_seed(seed)
    family.trainable_module().train()
    done = 0
    while done < batches:
        for batch in loader:
            loss = family.loss(batch, generator)
            loss.backward()
            for name, layer in layers:
                grads = [p.grad for p in layer.parameters() if p.requires_grad and p.grad is not None]
                squared[name] += float(sum(g.float().pow(2).sum() for g in grads)) if grads else 0.0
            for p in handle.trainable_params():
                p.grad = None
            done += 1
            if on_batch is not None:
                on_batch(done, batches, float(loss.detach()))
            if done >= batches:
                break
    return {name: squared[name] ** 0.5 for name, _ in layers}


def summarize(norms: dict[str, float], scopes: dict[str, str], top_k: int) -> dict:
    ranking = sorted(norms.items(), key=lambda item: (-item[1], item[0]))
    by_name: dict[str, list[float]] = defaultdict(list)
    by_scope: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path, value in norms.items():
        parts = path.split(".")
        short = ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]  # to_out.0 keeps its index
        by_name[short].append(value)
        for scope, pattern in scopes.items():
            if re.search(rf"(?:^|\.){pattern}\.", path):
                by_scope[scope][short].append(value)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {"ranking": [{"module": m, "grad_norm": v} for m, v in ranking],
            "by_projection": {k: mean(v) for k, v in sorted(by_name.items(), key=lambda kv: -mean(kv[1]))},
            "by_scope": {s: {k: mean(v) for k, v in names.items()} for s, names in by_scope.items()},
            "target_modules": [m for m, _ in ranking[:top_k]]}


def run_estimate(cfg, run_dir: Path, progress, batches: int = DEFAULT_BATCHES, top_k: int = DEFAULT_TOP_K) -> dict:
    from studio.adapters import inject_adapter
    from studio.families.base import build_family
    from studio.runfolder.device import standalone_device

    device, dtype = standalone_device(cfg)
    progress.event(Event.LOADING, message=f"loading {cfg.model.family} model from {cfg.model.path}")
    # The family is made from the estimate's config (its own LoRA, no text encoder), never re-pointed.
    family = build_family(estimate_config(cfg, []), device, dtype)
    family.load()
    candidates = family.estimate_candidates()
    handle = inject_adapter(family, estimate_config(cfg, candidates))
    progress.total = batches
    log.info("estimating %d candidate layers over %d batch(es)", len(candidates), batches)
    norms = gradient_norms(family, handle, batches, cfg.training.seed,
                           on_batch=lambda d, n, loss: progress.step(d, 0, loss, 0.0))
    report = summarize(norms, family.attention_scopes(), top_k)
    report.update(family=cfg.model.family, model=cfg.model.path, batches=batches, top_k=top_k,
                  candidates=len(candidates))
    _write_json(run_dir / "estimate_report.json", report)
    _write_json(run_dir / "target_modules.json", {"adapter": {"target_modules": report["target_modules"]}})
    return report


def _write_json(path: Path, data: dict) -> None:
    from studio.runfolder.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2))


def estimate_job(cfg, run_dir: Path, batches: int = DEFAULT_BATCHES, top_k: int = DEFAULT_TOP_K) -> int:
    """Run the estimate as a job: progress.jsonl ends with `done` (exit 0) or `error` (exit 1)."""
    from studio.runfolder.progress import ProgressLog, run_reported

    progress = ProgressLog(run_dir, total_steps=batches)

    def work() -> dict:
        report = run_estimate(cfg, run_dir, progress, batches, top_k)
        log.info("top %d layers: %s", top_k, ", ".join(report["target_modules"]))
        return {"output_dir": str(run_dir), "target_modules": report["target_modules"],
                "file": str(run_dir / "target_modules.json")}

    return run_reported(progress, "estimate", work)


def estimate_from_cli(config_path: str, overrides: list[str], batches: int = DEFAULT_BATCHES,
                      top_k: int = DEFAULT_TOP_K) -> int:
    from studio.config.loader import load_job
    from studio.runfolder.console import capture_console, log_to_stdout
    from studio.runfolder.layout import console_path

    if batches < 1 or top_k < 1:
        print("--batches and --top-k must be at least 1", file=sys.stderr)
        return 2
    cfg = load_job(config_path, overrides, kind="estimate")  # missing inputs: exit 2 before any model loads
    run_dir = Path(cfg.job.output_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with capture_console(console_path(run_dir)), log_to_stdout(cfg.logging.log_level):
        return estimate_job(cfg, run_dir, batches, top_k)
