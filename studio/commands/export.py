"""`python -m studio export RUN_DIR --format peft|kohya|dora_lora|merged|gguf [--out PATH]`: rebuild a finished
run's model and adapter from its folder, then write and check one export (studio/adapters/export.py; GGUF:
studio/families/causal_lm_gguf.py)."""
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


def export_from_cli(run_dir: str, fmt: str, out: str | None, gguf_type: str = "f16") -> int:
    """Rebuild the run's model and adapter from its folder, then export and check `fmt`."""
    if fmt == "gguf":
        return _export_gguf(Path(run_dir).resolve(), out, gguf_type)
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


def _export_gguf(run_dir: Path, out: str | None, gguf_type: str) -> int:
    """A language model's run as one GGUF file: its `merged/` folder (made first when the run has none),
    written by families/causal_lm_gguf.py, then loaded back with transformers and compared."""
    import tempfile

    from studio.families.causal_lm_gguf import GgufUnsupported, check_gguf, write_gguf
    from studio.registry.families import FAMILIES

    try:
        recorded = json.loads((run_dir / TRAINING_ARGS_FILE).read_text(encoding="utf-8"))["config"]
        family = recorded["model"]["family"]
        if FAMILIES[family].data != "text":
            raise formats.UnsupportedExport(f"GGUF holds language models; this run trained {family}")
        dest = Path(out) if out else run_dir / f"{recorded['job']['name'] or 'model'}-{gguf_type}.gguf"
        with tempfile.TemporaryDirectory(prefix=".gguf-", dir=run_dir) as scratch:
            merged = run_dir / "merged"
            if not (merged / "config.json").is_file():
                handle = load_run(run_dir)
                merged = Path(scratch) / "merged"
                result = export_adapter(handle, "merged", merged, checked_reference(handle))
                if result is not None and not result.ok:
                    print(result.summary(), file=sys.stderr)
                    return 1
            write_gguf(merged, dest, gguf_type)
            check = check_gguf(merged, dest, gguf_type)
    except (OSError, KeyError, ValueError, formats.UnsupportedExport, GgufUnsupported) as err:
        print(f"export failed: {err}", file=sys.stderr)
        return 1
    verdict = "matches" if check["ok"] else "DOES NOT match"
    print(f"gguf export written to {dest} ({gguf_type}); loaded back in transformers it {verdict} the merged model "
          f"(max logit difference {check['max_abs_diff']:.2e}, same token ids: {check['same_tokens']})",
          file=sys.stdout if check["ok"] else sys.stderr)
    return 0 if check["ok"] else 1


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
