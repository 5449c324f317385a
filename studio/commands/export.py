"""`python -m studio export RUN_DIR --format peft|kohya|dora_lora|merged [--out PATH]`: rebuild a finished run's
model and adapter from its folder, then write and check one export (studio/adapters/export.py)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from studio.adapters import formats, writer
from studio.adapters.export import checked_reference, default_destination, export_adapter
from studio.config import deep_merge, load_config
from studio.runfolder.layout import TRAINING_ARGS_FILE

# What an export changes in the run's recorded config: the run's own final weights are loaded (not the
# adapter it started from), and exporting needs the model only, never the dataset cache.
EXPORT_OVERRIDES = {"adapter": {"init_from": ""}, "data": {"cache_mode": "off"}}


def export_config(recorded: dict):
    """The config an export rebuilds the run with: the recorded one with `EXPORT_OVERRIDES`."""
    return load_config(deep_merge(recorded, EXPORT_OVERRIDES), [])


def export_from_cli(run_dir: str, fmt: str, out: str | None) -> int:
    """Rebuild the run's model and adapter from its folder, then export and check `fmt`."""
    try:
        handle = load_run(Path(run_dir))
        dest = default_destination(handle, fmt, Path(run_dir).resolve(), out)
        if fmt == "kohya" and not handle.family.kohya_prefixes:
            return _export_family_single_file(handle, dest)
        result = export_adapter(handle, fmt, dest, checked_reference(handle))
    except (OSError, ValueError, formats.UnsupportedExport) as err:
        print(f"export failed: {err}", file=sys.stderr)
        return 1
    if result is None:
        print(f"{fmt} export written to {dest} (not checked)")
        return 0
    print(result.summary(), file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def _export_family_single_file(handle, dest: Path) -> int:
    """Families whose ComfyUI file has a layout of its own (ACE-Step) write it in `save_adapter`:
    write the adapter files into a scratch folder beside `dest`, then move that file into place."""
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=dest.parent) as scratch:
        handle.save(Path(scratch))
        found = sorted(Path(scratch).glob("*_kohya.safetensors"))
        if not found:
            raise formats.UnsupportedExport(f"no ComfyUI single-file layout exists for a '{handle.kind}' adapter of "
                                            f"this family; use --format peft")
        os.replace(found[0], dest)
    print(f"kohya export written to {dest} (the family's own ComfyUI layout)")
    return 0


def load_run(run_dir: Path):
    """The trained model of a finished run: its config from training_args.json, its final adapter."""
    import torch

    from studio.adapters import inject_adapter
    from studio.families.base import build_family
    from studio.runfolder.device import standalone_device

    record_file = run_dir / TRAINING_ARGS_FILE
    if not record_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {TRAINING_ARGS_FILE})")
    cfg = export_config(json.loads(record_file.read_text(encoding="utf-8"))["config"])
    # fp32 even on a GPU: merged weights are exact, and the check's tolerance is the tightest.
    family = build_family(cfg, standalone_device(cfg)[0], torch.float32)
    family.load()
    handle = inject_adapter(family, cfg)
    missing = handle.load_component_state_dicts(writer.read_adapter_folder(run_dir, handle, field="RUN_DIR"))
    if missing:
        raise ValueError(f"{run_dir / formats.ADAPTER_FILE} lacks {len(missing)} adapter weights, e.g. {missing[:3]}")
    return handle
