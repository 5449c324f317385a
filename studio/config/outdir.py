"""Checks on `job.output_dir` that need only the file system (issue #18 items 7, 8, 9).

- it must be a folder (or creatable as one), not an existing file;
- it must not lie inside a dataset folder, where the run's own samples would be scanned as data;
- a folder that already holds a run (an adapter or a committed checkpoint) is continued only with
  `checkpointing.auto_resume`, started afresh only with `job.overwrite` (the old run is archived
  first, as the queue's retry does); otherwise it is refused, so nothing saved is replaced.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

# Written by a finished run (see README "What a run writes"); checkpoints are found by their manifest.
FINAL_FILES = ("adapter_model.safetensors", "adapter_config.json", "pytorch_lora_weights.safetensors",
               "training_args.json")
_CHECKPOINT = re.compile(r"^checkpoint-\d+$")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def folder_problems(output_dir: str, data_folders: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`data_folders`: (field, path) of the dataset folders; demo: and hub paths are skipped."""
    if not output_dir.strip():
        return []
    run_dir = Path(output_dir).expanduser().resolve()
    probe = run_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        what = "is a file" if probe == run_dir else f"cannot be created: {probe} is a file"
        return [("job.output_dir", f"{output_dir} {what}; the run folder must be a folder (created if missing)")]
    out = []
    for field, value in data_folders:
        if not value or value.startswith("demo:"):
            continue
        data = Path(value).expanduser().resolve()
        if data.is_dir() and _inside(run_dir, data):
            out.append(("job.output_dir", f"{output_dir} is inside the dataset folder {field} = {value}; the "
                        "run's samples would be read as training data. Choose a folder outside it"))
    return out


def held_run(run_dir: Path) -> list[str]:
    """What of an earlier run the folder holds (final files, committed checkpoints), by name."""
    if not run_dir.is_dir():
        return []
    found = [name for name in FINAL_FILES[:1] if (run_dir / name).is_file()]
    found += sorted(p.name for p in run_dir.iterdir()
                    if _CHECKPOINT.match(p.name) and (p / "manifest.json").is_file())
    return found


def reuse_problems(cfg) -> list[tuple[str, str]]:
    if not cfg.job.output_dir.strip() or cfg.checkpointing.auto_resume or cfg.checkpointing.resume_from \
            or cfg.job.overwrite:
        return []
    run_dir = Path(cfg.job.output_dir).expanduser().resolve()
    found = held_run(run_dir)
    if not found:
        return []
    return [("job.output_dir", f"{run_dir} already holds a run ({', '.join(found[:4])}); set "
             "checkpointing.auto_resume=true to continue it, job.overwrite=true to start afresh (the old run "
             "moves to attempts/<n>/), or choose another folder")]


def previous_job_name(output_dir: str) -> str:
    """The job name an earlier run in this folder had, so a continued run keeps its file names."""
    if not output_dir.strip():
        return ""
    try:
        record = json.loads((Path(output_dir).expanduser() / "training_args.json").read_text(encoding="utf-8"))
        return str(record["config"]["job"]["name"] or "")
    except (OSError, ValueError, KeyError, TypeError):
        return ""
