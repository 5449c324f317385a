"""Exports: PEFT/diffusers folder, kohya single file, merged model; each verified before it is published.

Every export is written under a temporary name next to its destination, loaded back and compared
(`verify.py`), then renamed into place, so a failed or mismatching export never leaves a truncated or
wrong file under the final name. The run's own `adapter_model.safetensors` is the exception: it is the
training result, so it is published even when its check fails (the run then ends with an error).

    python -m studio export RUN_DIR --format peft|kohya|merged [--out PATH]
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

from studio.adapters import formats, writer
from studio.adapters.verify import CheckResult, Reference, check_export, reference_outputs

log = logging.getLogger("studio.adapters")
FORMATS = ("peft", "kohya", "merged")


class ExportMismatch(RuntimeError):
    """An exported file does not reproduce the trained model (the message lists every finding)."""


def default_destination(handle, fmt: str, run_dir: Path, out: str | None) -> Path:
    if fmt == "kohya":
        name = formats.kohya_file_name(handle.cfg.job.name)
        if out is None:
            return run_dir / name
        return Path(out) if str(out).endswith(".safetensors") else Path(out) / name
    if out is not None:
        return Path(out)
    return run_dir / "merged" if fmt == "merged" else run_dir


def export_adapter(handle, fmt: str, dest: Path, reference: Reference | None, step: int | None = None,
                   publish_on_mismatch: bool = False) -> CheckResult | None:
    """Write `fmt` to `dest` (a folder for peft/merged, a file for kohya). With a `reference` the export is
    checked first; returns the check (None when unchecked). `merged` folds the adapter into the model."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    dest = Path(dest).expanduser().resolve()
    (dest.parent if fmt == "kohya" else dest).mkdir(parents=True, exist_ok=True)
    # peft: files go into the folder `dest`, so they are staged inside it; kohya/merged: next to `dest`
    home = dest if fmt == "peft" else dest.parent
    formats.remove_stale_temps(home)
    tmp = formats.temp_name(home / fmt) if fmt == "peft" else formats.temp_name(dest)
    _remove(tmp)
    try:
        if fmt == "peft":
            tmp.mkdir()
            writer.write_native(handle, tmp, handle.component_state_dicts())
        elif fmt == "kohya":
            writer.write_kohya(handle, tmp, step=step)
        else:
            handle.merge_into_base()
            handle.family.save_merged(tmp, handle.components)
        result = check_export(handle, tmp, fmt, reference) if reference is not None else None
        if result is not None:
            result.path = str(dest)
        if result is None or result.ok or publish_on_mismatch:
            _publish(tmp, dest, fmt)
            if fmt == "peft":
                writer.link_for_diffusers(handle, dest)
        return result
    finally:
        _remove(tmp)


def _publish(tmp: Path, dest: Path, fmt: str) -> None:
    if fmt == "kohya":
        os.replace(tmp, dest)
    elif fmt == "peft":  # files into an existing folder (the run folder): each one replaced atomically
        for path in sorted(tmp.iterdir()):
            os.replace(path, dest / path.name)
    else:  # a whole model folder: swap folders, drop the old one last
        old = dest.with_name(f".old-{os.getpid()}-{dest.name}")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


# ---- end of training ---------------------------------------------------------------------------
def finish_exports(handle, run_dir: Path, step: int, progress=None) -> list[CheckResult]:
    """The run's final files: adapter (PEFT layout), kohya file, merged model when asked; each checked
    when `adapter.verify_exports` is on. Raises ExportMismatch after writing everything it could."""
    cfg = handle.cfg
    reference = checked_reference(handle, progress)
    results: list[CheckResult | None] = []
    plan = ["peft"] + (["kohya"] if handle.family.kohya_prefixes else []) + (
        ["merged"] if cfg.adapter.merge_after_training else [])
    for fmt in plan:
        dest = default_destination(handle, fmt, run_dir, None)
        try:
            result = export_adapter(handle, fmt, dest, reference, step=step, publish_on_mismatch=fmt == "peft")
        except formats.UnsupportedExport as err:
            _report(progress, "warning", message=f"{fmt} file not written: {err}")
            continue
        results.append(result)
        fields = result.as_event() if result else {"format": fmt, "path": str(dest), "verified": None}
        if fmt == "peft":  # the event names the adapter file itself, as before exports were checked
            fields["path"] = str(dest / formats.ADAPTER_FILE)
        _report(progress, "saved", step=step, **fields)
        log.info("%s", result.summary() if result else f"{fmt} export written to {dest} (not checked)")
    failed = [r for r in results if r is not None and not r.ok]
    if failed:
        raise ExportMismatch("exported files do not reproduce the trained model: "
                             + " | ".join(r.summary() for r in failed))
    return [r for r in results if r is not None]


def checked_reference(handle, progress=None) -> Reference | None:
    """The trained model's outputs to check exports against; None (with a warning) when checks are off
    or the family has no verification hooks."""
    if not handle.cfg.adapter.verify_exports:
        return None
    try:
        return reference_outputs(handle)
    except NotImplementedError as err:
        _report(progress, "warning", message=f"exports are not checked: {err}")
        return None


def _report(progress, event: str, **fields) -> None:
    if progress is not None:
        progress.event(event, **fields)
    elif event == "warning":
        log.warning("%s", fields.get("message"))


# ---- python -m studio export ---------------------------------------------------------------------
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
    from studio.config import load_config
    from studio.families.base import build_family

    record_file = run_dir / "training_args.json"
    if not record_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no training_args.json)")
    cfg = load_config(json.loads(record_file.read_text(encoding="utf-8"))["config"], [])
    cfg.adapter.init_from = ""  # the run's own final weights are loaded below
    cfg.data.cache_mode = "off"  # exporting needs the model only, never the dataset cache
    from studio.train.device import job_device

    # fp32 even on a GPU: merged weights are exact, and the check's tolerance is the tightest.
    family = build_family(cfg, job_device(cfg), torch.float32)
    family.load()
    handle = inject_adapter(family, cfg)
    missing = handle.load_component_state_dicts(writer.read_adapter_folder(run_dir, handle, field="RUN_DIR"))
    if missing:
        raise ValueError(f"{run_dir / formats.ADAPTER_FILE} lacks {len(missing)} adapter weights, e.g. {missing[:3]}")
    return handle
