"""Exports: PEFT/diffusers folder, kohya single file, merged model; each verified before it is published.

Every export is written under a temporary name next to its destination, loaded back and compared
(`verify.py`), then renamed into place, so a failed or mismatching export never leaves a truncated or
wrong file under the final name. The run's own `adapter_model.safetensors` is the exception: it is the
training result, so it is published even when its check fails (the run then ends with an error).
`python -m studio export` is in studio/commands/export.py.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from studio.adapters import formats, writer
from studio.adapters.verify import CheckResult, Reference, check_export, reference_outputs
from studio.runfolder.events import Event

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
            _report(progress, Event.WARNING, message=f"{fmt} file not written: {err}")
            continue
        results.append(result)
        fields = result.as_event() if result else {"format": fmt, "path": str(dest), "verified": None}
        if fmt == "peft":  # the event names the adapter file itself, as before exports were checked
            fields["path"] = str(dest / formats.ADAPTER_FILE)
        _report(progress, Event.SAVED, step=step, **fields)
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
        _report(progress, Event.WARNING, message=f"exports are not checked: {err}")
        return None


def _report(progress, event: Event, **fields) -> None:
    if progress is not None:
        progress.event(event, **fields)
    elif event == Event.WARNING:
        log.warning("%s", fields.get("message"))
