"""Tiny random models of every family, written as real model folders.

Tests and the offline demo load these through the same `from_pretrained` code as real models,
so a family that works on a tiny folder works on the real one. Nothing is downloaded: configs,
weights (seeded, so two writes are byte-identical) and tokenizers are all built here.

    write_tiny_model("sd15", "/tmp/tiny-sd15")      # -> Path, StableDiffusionPipeline-loadable
    ensure_tiny_model("causal_lm", STUDIO_HOME)     # -> STUDIO_HOME/models/tiny-causal_lm
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from studio.registry.families import ALL_FAMILIES, FAMILIES, load_attr
from studio.paths import tiny_model_dir

# Every registered family has a tiny model (its registry row names the writer, imported lazily:
# torch/diffusers/transformers take seconds to import and most callers only need the names).
TINY_FAMILIES = ALL_FAMILIES


def _writer(family: str) -> Callable[[Path], None]:
    return load_attr(FAMILIES[family].tiny_writer)


def _check_family(family: str) -> None:
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}; allowed: {', '.join(TINY_FAMILIES)}")


def write_tiny_model(family: str, out_dir: str | Path) -> Path:
    """Write a complete tiny `family` model folder into `out_dir` and return its path."""
    _check_family(family)
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The writers seed torch for byte-identical weights; fork the RNG so a caller that seeded
    # its own run (the trainer, a test) keeps its random stream.
    with torch.random.fork_rng(devices=[]):
        _writer(family)(out)
    return out


def is_model_folder(path: Path) -> bool:
    """A folder counts as a model only once its index/config exists (written last by save)."""
    return any((path / name).is_file() for name in ("model_index.json", "modular_model_index.json", "config.json"))


def ensure_tiny_model(family: str, home: str | Path) -> Path:
    """Return `home/models/tiny-<family>`, writing it first if it is not there yet.

    Written into a temporary sibling then renamed, so a reader never sees a half-written
    folder; when two processes race, the loser drops its copy and uses the winner's.
    """
    _check_family(family)
    final = tiny_model_dir(family, home)
    if is_model_folder(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tiny-{family}-", dir=final.parent))
    try:
        write_tiny_model(family, tmp)
        _rename_into_place(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _rename_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; if another process won the race, keep the winner's folder."""
    if final.exists() and not is_model_folder(final):
        # An incomplete folder (say, a copy interrupted midway) would block the rename forever.
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.rename(tmp, final)  # atomic on one filesystem; fails if `final` is a non-empty dir
    except OSError:
        if not is_model_folder(final):
            raise
