"""What a local `model.path` must hold for the image families, checked before anything is loaded.

diffusers' own errors for a wrong path ("no file named config.json", "is not a valid JSON file")
do not say what the folder should contain; these do.
"""
from __future__ import annotations

from pathlib import Path

from studio.config.single_file import SUFFIX as SINGLE_FILE
from studio.registry.families import FAMILIES


def _expected(parts: tuple[str, ...]) -> str:
    return (f"a diffusers folder (model_index.json and the subfolders {', '.join(parts)}) or one single-file "
            f"{SINGLE_FILE} checkpoint")


def _safetensors_problem(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:  # reads the header only, imports no torch
            if not any(k.startswith(("model.diffusion_model.", "unet.", "down_blocks", "conv_in")) for k in fh.keys()):
                return "holds no UNet weights (is it a LoRA or a VAE rather than a full checkpoint?)"
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for every bad header
        return f"is not a readable safetensors file ({str(err).splitlines()[0][:120]})"
    return None


def model_problems(family: str, path_text: str, extras: str = "") -> list[tuple[str, str]]:
    """Problems of a local SD/SDXL model path (light: safetensors reads the header only) and, for a single
    checkpoint file, of the folder it takes its config and missing parts from (`model.extras_path`); hub ids
    and tiny: models are not checked here."""
    problems = _local_problems(family, path_text, "model.path")
    if extras.strip() and Path(path_text).expanduser().is_file():
        if Path(extras).expanduser().is_file():
            return problems + [("model.extras_path", f"{Path(extras).name}: give the diffusers folder or hub id "
                                "of the model's other parts, not a file")]
        problems += _local_problems(family, extras, "model.extras_path")
    return problems


def _local_problems(family: str, path_text: str, field: str) -> list[tuple[str, str]]:
    path = Path(path_text).expanduser()
    parts = FAMILIES[family].model_parts if family in FAMILIES else ()
    if path_text.startswith("tiny:") or not path.exists() or not parts:
        return []
    expected = _expected(parts)
    if path.is_file():
        if path.suffix.lower() != SINGLE_FILE:
            return [(field, f"{path.name} is not a model {family} can load; expected {expected}")]
        problem = _safetensors_problem(path)
        return [(field, f"{path.name} {problem}; expected {expected}")] if problem else []
    missing = [p for p in parts if not (path / p).is_dir()]
    if missing:
        return [(field, f"{path} lacks {', '.join(missing)}; expected {expected}")]
    return []


def model_source_problems(family: str, path_text: str) -> list[tuple[str, str]]:
    """The family's own folder check (its registry row's `source_check`, e.g. the causal LM's: GGUF,
    pickle-only, no config.json). It may import torch, so it runs for jobs about to start (`load_job`),
    not on every UI validation."""
    from studio.registry.families import load_attr

    path = Path(path_text).expanduser()
    check = FAMILIES[family].source_check if family in FAMILIES else None
    if check is None or path_text.startswith("tiny:") or not path.exists():
        return []
    try:
        load_attr(check)(str(path))
    except ValueError as err:  # the family's ModelSourceError is a ValueError naming model.path
        return [("model.path", str(err).removeprefix("model.path: "))]
    return []
