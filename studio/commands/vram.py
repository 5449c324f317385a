"""`python -m studio vram CONFIG.json [--gpu-gb N]`: the GPU memory and step-time estimate of a job,
printed before anything loads (studio/config/vram.py does the sums; this reads the config and the model
folder and says what would make it fit)."""
from __future__ import annotations

import json
import sys

from studio.config.errors import ConfigError
from studio.config.loader import load_config
from studio.config.model_shapes import local_model_folder, model_for
from studio.config.vram import GIB, estimate_vram
from studio.config.vram_fit import checkpointing_for, fitting_changes, gpu_memory


def vram_report(cfg, gpu_gb: float | None = None) -> dict:
    """The estimate of `cfg` as a dict (the CLI's `--json`), with the checkpointing decision and, when it
    does not fit, the settings that would make it fit."""
    from studio.families.paths import resolve_model_path

    if gpu_gb is not None:
        cfg = cfg.model_copy(deep=True)
        cfg.memory.gpu_memory_gb = gpu_gb
    folder = resolve_model_path(cfg.model.path) if cfg.model.path.startswith("tiny:") else local_model_folder(cfg.model.path)
    model = model_for(cfg, folder, hub=True)
    if model is None:
        raise ConfigError([("model.path", f"{cfg.model.path!r}: no model shapes to read: expected a diffusers "
                            "or transformers folder with config.json and .safetensors files, or a hub id (read "
                            "from the Hugging Face cache, else from the hub's file headers when online)")])
    gpu, name = gpu_memory(cfg)
    on, why = checkpointing_for(cfg, folder, hub=True)
    est = estimate_vram(cfg, model, checkpointing=on, gpu_bytes=gpu, gpu_name=name)
    out = {**est.as_dict(), "checkpointing_decision": why, "lines": est.lines()}
    if est.fits is False:
        changes = fitting_changes(cfg, model, gpu)
        out["to_fit"] = {"settings": changes[-1][0], "total_gib": round(changes[-1][1].total / GIB, 2),
                         "fits": changes[-1][1].fits} if changes else None
    return out


def vram_from_cli(config: str, overrides: list[str], gpu_gb: float | None = None, as_json: bool = False) -> int:
    report = vram_report(load_config(config, overrides), gpu_gb)
    if as_json:
        print(json.dumps({k: v for k, v in report.items() if k != "lines"}, indent=2))
    else:
        print("\n".join(report["lines"]))
        print(report["checkpointing_decision"])
        fix = report.get("to_fit")
        if fix:
            settings = " ".join(f"--set {k}={json.dumps(v)}" for k, v in fix["settings"].items())
            verdict = "fits" if fix["fits"] else "still does not fit"
            print(f"With {settings}: about {fix['total_gib']:.1f} GiB ({verdict})", file=sys.stdout)
    return 1 if report["fits"] is False else 0
