"""The Playground: try a finished run's adapter (or one of its checkpoints) with your own prompt and seed.

A request becomes one `generate` queue job per adapter source, so the UI never holds a model:

    configs = playground_configs(run_config, ["final", "checkpoint-10"], prompt="...", seed=7)
    for cfg in configs: store.add(cfg, kind="generate")

Each job's config is the run's own config with `adapter.init_from` set to the source, the prompt as its
only `sampling.prompts` entry and `job.output_dir` = `<run>/playground/<batch>/<source>/`. The job loads
the base model through the family's loading code, puts the adapter in with `inject_adapter` (which reads
`init_from`), generates with the family's own sampling (`family.sample`, the code that renders the
training samples) and writes there: the result, `settings.json` (exactly what produced it),
`reproduce.py` (the diffusers / transformers code that makes the same output outside the studio) and,
for image families, `comfyui_workflow.json`.
"""
from __future__ import annotations

import copy
import json
import logging
import re
import time
from pathlib import Path

from studio.registry.families import FAMILIES
from studio.config.errors import ConfigError

log = logging.getLogger("studio.playground")
FINAL = "final"
PLAYGROUND_DIR = "playground"
SETTINGS_FILE = "settings.json"
CODE_FILE = "reproduce.py"
WORKFLOW_FILE = "comfyui_workflow.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def adapter_sources(run_dir: Path) -> list[str]:
    """What a run offers to try: its complete checkpoints (oldest first) and `final` once the adapter exists."""
    from studio.adapters.formats import ADAPTER_FILE
    from studio.train.checkpoint import list_checkpoints

    out = [p.name for p in list_checkpoints(run_dir)]
    if (Path(run_dir) / ADAPTER_FILE).is_file():
        out.append(FINAL)
    return out


def source_folder(run_dir: Path, source: str) -> Path:
    """The folder of one source; a ConfigError names `playground.sources` when it is not usable."""
    from studio.adapters.formats import ADAPTER_FILE

    run_dir = Path(run_dir)
    if source != FINAL and not _CHECKPOINT.match(source):
        raise ConfigError([("playground.sources", f"{source!r}: pick `final` or a `checkpoint-<step>` of the run")])
    folder = run_dir if source == FINAL else run_dir / source
    if not (folder / ADAPTER_FILE).is_file():
        offered = ", ".join(adapter_sources(run_dir)) or "none yet"
        raise ConfigError([("playground.sources", f"{source}: no {ADAPTER_FILE} in {folder} (this run offers: "
                                                  f"{offered})")])
    return folder


def source_step(run_dir: Path, source: str) -> int:
    match = _CHECKPOINT.match(source)
    if match:
        return int(match.group(1))
    try:
        return int(json.loads((Path(run_dir) / "training_args.json").read_text("utf-8")).get("total_steps", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def playground_configs(run_config: dict, sources: list[str], prompt: str, *, seed: int = 0, steps: int = 0,
                       guidance: float = -1.0, negative_prompt: str = "", width: int = 0, height: int = 0,
                       lyrics: str = "", sampling: dict | None = None, batch: str = "") -> list[dict]:
    """One validated `generate` job config per source, all with the same prompt and seed.

    `run_config`: the finished run's config (its queue row). `sampling`: other `sampling.*` values (LLM
    `max_new_tokens`, `temperature`; music `audio_seconds`). Raises ConfigError naming the field."""
    from studio.config import load_config

    run_dir = Path(run_config["job"]["output_dir"])
    errors = []
    if not prompt.strip():
        errors.append(("playground.prompt", "write a prompt (or a chat message) to generate from"))
    if not sources:
        errors.append(("playground.sources", "pick at least one checkpoint or the final adapter"))
    if errors:
        raise ConfigError(errors)
    folders = [source_folder(run_dir, s) for s in sources]
    batch = batch or time.strftime("%Y%m%d-%H%M%S")
    entry = {"prompt": prompt, "negative_prompt": negative_prompt, "seed": int(seed), "steps": int(steps),
             "guidance": float(guidance), "width": int(width), "height": int(height)}
    if FAMILIES[run_config["model"]["family"]].data == "songs":  # music: the lyrics go with the prompt
        entry["lyrics"] = lyrics
    out = []
    for source, folder in zip(sources, folders):
        cfg = copy.deepcopy(run_config)
        cfg["job"] = {**cfg["job"], "name": f"{cfg['job']['name']}-play-{source.replace('checkpoint-', 'step')}",
                      "output_dir": str(run_dir / PLAYGROUND_DIR / batch / source)}
        cfg["adapter"] = {**cfg["adapter"], "init_from": str(folder)}
        cfg["sampling"] = {**cfg.get("sampling", {}), **(sampling or {}), "prompts": [entry]}
        load_config(cfg)  # every bad value (seed, steps, ...) is named now, before anything is queued
        out.append(cfg)
    return out


# -- the job ---------------------------------------------------------------------------------------------
def generate(cfg, out_dir: Path, progress) -> dict:
    """Load, apply the adapter, generate; write the result and how to reproduce it into `out_dir`."""
    from studio import playground_code
    from studio.adapters import inject_adapter
    from studio.families.base import build_family
    from studio.sampling import write_sample
    from studio.runfolder.device import standalone_device

    source = Path(cfg.adapter.init_from)
    run_dir = out_dir.parent.parent.parent
    label = FINAL if source.resolve() == run_dir.resolve() else source.name
    device, dtype = standalone_device(cfg)
    progress.event("loading", message=f"loading {cfg.model.family} model from {cfg.model.path}")
    family = build_family(cfg, device, dtype)
    family.load()
    handle = inject_adapter(family, cfg)  # reads adapter.init_from: the chosen checkpoint or final adapter
    progress.event("generating", message=f"generating with {label}")
    with handle.eval_mode():
        samples = family.sample(cfg.sampling.prompts, source_step(run_dir, label))
    sample = samples[0]
    path = write_sample(out_dir, "result", sample)
    settings = {**sample.meta, "source": label, "adapter_folder": str(source), "run": str(run_dir),
                "family": cfg.model.family, "model": cfg.model.path, "device": str(device), "dtype": str(dtype),
                "adapter_type": cfg.adapter.type, "file": path.name}
    if FAMILIES[cfg.model.family].data == "text":  # a language model: its sampling settings
        settings.update(max_new_tokens=cfg.sampling.max_new_tokens, temperature=cfg.sampling.temperature)
    settings["reproduce_cli"] = f"python -m studio generate {out_dir / 'config.json'}"
    (out_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    (out_dir / CODE_FILE).write_text(playground_code.reproduce_code(cfg, settings), encoding="utf-8")
    workflow = playground_code.comfyui_workflow(cfg, settings, source)
    if workflow is not None:
        (out_dir / WORKFLOW_FILE).write_text(json.dumps(workflow, indent=2), encoding="utf-8")
    return {"output_dir": str(out_dir), "file": str(path), "source": label}


def generate_from_cli(config_path: str, overrides: list[str]) -> int:
    """`python -m studio generate CONFIG`: a generate job (progress.jsonl ends with done / error)."""
    from studio.config import finalize_job, load_config
    from studio.runfolder.console import capture_console, log_to_stdout
    from studio.runfolder.progress import ProgressLog, run_reported

    cfg = finalize_job(load_config(config_path, overrides))
    if not cfg.adapter.init_from:
        raise ConfigError([("adapter.init_from", "a generate job needs the adapter folder to try "
                                                 "(a run folder or one of its checkpoint-<step> folders)")])
    if not cfg.sampling.prompts:
        raise ConfigError([("sampling.prompts", "a generate job needs one prompt")])
    out_dir = Path(cfg.job.output_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with capture_console(out_dir / "console.log"), log_to_stdout(cfg.logging.log_level):
        progress = ProgressLog(out_dir, total_steps=1)
        return run_reported(progress, "generate", lambda: generate(cfg, out_dir, progress))


# -- reading results (the UI) ----------------------------------------------------------------------------
def list_batches(run_dir: Path) -> list[str]:
    """The run's playground requests, newest first."""
    folder = Path(run_dir) / PLAYGROUND_DIR
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir() if p.is_dir()), reverse=True)


def read_batch(run_dir: Path, batch: str) -> list[dict]:
    """One entry per source of a request: its settings (once done), code, workflow and state."""
    from studio.runfolder import read_outcome

    out = []
    folder = Path(run_dir) / PLAYGROUND_DIR / batch
    for sub in sorted(folder.iterdir(), key=source_order) if folder.is_dir() else []:
        entry = {"source": sub.name, "folder": str(sub)}
        settings = sub / SETTINGS_FILE
        if settings.is_file():
            entry["settings"] = json.loads(settings.read_text(encoding="utf-8"))
            entry["path"] = str(sub / entry["settings"]["file"])
            entry["code"] = (sub / CODE_FILE).read_text(encoding="utf-8") if (sub / CODE_FILE).is_file() else ""
            entry["workflow"] = str(sub / WORKFLOW_FILE) if (sub / WORKFLOW_FILE).is_file() else None
        else:
            outcome = read_outcome(sub, 0)
            entry["error"] = outcome.message if outcome.last_event == "error" else None
        out.append(entry)
    return out


def source_order(path: Path | str) -> tuple[int, str]:
    """Checkpoints by step, then the final adapter."""
    name = Path(path).name
    match = _CHECKPOINT.match(name)
    return (int(match.group(1)), name) if match else (10**12, name)
