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
FORMATS = ("peft", "kohya", "dora_lora", "merged")
SINGLE_FILES = ("kohya", "dora_lora")  # formats written as one file (the others are folders)


class ExportMismatch(RuntimeError):
    """An exported file does not reproduce the trained model (the message lists every finding)."""


def default_destination(handle, fmt: str, run_dir: Path, out: str | None) -> Path:
    if fmt in SINGLE_FILES:
        name = formats.kohya_file_name(handle.cfg.job.name, fmt)
        if out is None:
            return run_dir / name
        return Path(out) if str(out).endswith(".safetensors") else Path(out) / name
    if out is not None:
        return Path(out)
    return run_dir / "merged" if fmt == "merged" else run_dir


def export_adapter(handle, fmt: str, dest: Path, reference: Reference | None, step: int | None = None,
                   publish_on_mismatch: bool = False) -> CheckResult | None:
    """Write `fmt` to `dest` (a folder for peft/merged, a file for kohya). With a `reference` the export is
    checked first; returns the check (None when unchecked). `merged` folds the adapter into the model;
    `dora_lora` is a DoRA run's change as a plain LoRA file (dora_lora.py), its measured error in the check."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    dest = Path(dest).expanduser().resolve()
    (dest.parent if fmt in SINGLE_FILES else dest).mkdir(parents=True, exist_ok=True)
    # peft: files go into the folder `dest`, so they are staged inside it; kohya/merged: next to `dest`
    home = dest if fmt == "peft" else dest.parent
    formats.remove_stale_temps(home)
    tmp = formats.temp_name(home / fmt) if fmt == "peft" else formats.temp_name(dest)
    _remove(tmp)
    approximation = None
    try:
        if fmt == "peft":
            tmp.mkdir()
            writer.write_native(handle, tmp, handle.component_state_dicts())
        elif fmt == "kohya":
            writer.write_kohya(handle, tmp, step=step)
        elif fmt == "dora_lora":
            approximation = writer.write_dora_lora(handle, tmp, step=step)
        else:
            handle.merge_into_base()
            handle.family.save_merged(tmp, handle.components)
        result = check_export(handle, tmp, fmt, reference) if reference is not None else None
        if result is not None:
            result.path = str(dest)
            if approximation is not None:
                judge_approximation(result, approximation)
        if result is None or result.ok or publish_on_mismatch:
            _publish(tmp, dest, fmt)
            if fmt == "peft":
                writer.link_for_diffusers(handle, dest)
        return result
    finally:
        _remove(tmp)


def judge_approximation(result: CheckResult, stats: dict) -> None:
    """A re-expression cut below full rank cannot reproduce the trained output exactly: its output error is
    then a finding to report beside the per-layer error, not a broken file. At full rank the check is strict."""
    from studio.adapters.dora_lora import EXACT

    result.approximation = {k: v for k, v in stats.items() if k != "per_layer"}
    summary = (f"rank-{stats['rank']} LoRA re-expression of the DoRA change: per-layer relative error max "
               f"{stats['max_rel_error']:.2e}, mean {stats['mean_rel_error']:.2e} over {stats['layers']} layers")
    if stats["max_rel_error"] > EXACT:
        differs = [p for p in result.problems if p.startswith("output differs")]
        result.problems = [p for p in result.problems if p not in differs]
        summary += "".join(f"; {p} (from the rank cut)" for p in differs)
    result.notes.append(summary)


def _publish(tmp: Path, dest: Path, fmt: str) -> None:
    if fmt in SINGLE_FILES:
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
    single = bool(handle.family.kohya_prefixes)
    plan = ["peft"] + (["kohya"] if single else []) + (
        ["dora_lora"] if single and handle.kind == "dora" and cfg.adapter.dora_as_lora_rank else []) + (
        ["merged"] if cfg.adapter.merge_after_training else [])
    for fmt in plan:
        dest = default_destination(handle, fmt, run_dir, None)
        try:
            result = export_adapter(handle, fmt, dest, reference, step=step, publish_on_mismatch=fmt == "peft")
        except formats.UnsupportedExport as err:
            _report(progress, Event.WARNING, message=f"{fmt} file not written: {err}")
            continue
        results.append(result)
        if fmt == "kohya" and handle.kind == "dora":  # ComfyUI reads DoRA its own way: say so where it is used
            note = dora_comfyui_note(handle, run_dir)
            _report(progress, Event.WARNING, message=note)
            if result is not None:
                result.notes.append(note)
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


def dora_comfyui_note(handle, run_dir: Path) -> str:
    from studio.adapters.dora_lora import COMFYUI_DORA_NOTE, COMFYUI_DORA_USE

    if handle.cfg.adapter.dora_as_lora_rank:
        return COMFYUI_DORA_USE.format(file=default_destination(handle, "dora_lora", run_dir, None).name)
    return COMFYUI_DORA_NOTE


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
