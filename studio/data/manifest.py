"""A generic, incremental cache of per-item tensors: `manifest.json` plus safetensors files.

The manifest holds one entry per item (an image, a song, a document):

    "photo.png": {"source": "photo.png",
                  "parts": {"latents": {"fingerprint": "<sha256 of the input>",
                                        "settings": {... everything that changes the tensors ...},
                                        "file": "latents/3f/3f9c....safetensors"}}}

A part is fresh when its fingerprint and settings equal what is wanted now and its file exists; a
rerun re-encodes only the parts that are not, and leaves every other entry byte-identical. Files
are named after what they hold (key + fingerprint + settings), written to a temporary name, fsynced
and renamed; the manifest is replaced the same way, and a file no entry points at is deleted only
after the manifest that stopped using it is committed. Families reuse this class with their own
part names (image: latents + text; music: audio latents + lyrics; LLM: tokens).
"""
from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from studio.runfolder.atomic import atomic_write  # noqa: F401 - re-exported: data/scan.py imports it from here

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stable_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Want:
    """What a cached part must have been made from: the input's fingerprint and the settings used."""

    fingerprint: str
    settings: dict


@dataclass
class CacheReport:
    """Counts over the wanted items (an item is stale/missing when any of its parts is)."""

    fresh: int = 0
    stale: int = 0
    missing: int = 0
    removed: int = 0  # entries whose item is gone from the dataset
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (key, why) for stale / missing items

    @property
    def total(self) -> int:
        return self.fresh + self.stale + self.missing

    @property
    def is_fresh(self) -> bool:
        return self.stale == 0 and self.missing == 0

    def summary(self) -> str:
        return f"{self.fresh} fresh, {self.stale} stale, {self.missing} missing, {self.removed} removed"

    def as_dict(self) -> dict:
        return {"fresh": self.fresh, "stale": self.stale, "missing": self.missing, "removed": self.removed}


class CacheManifest:
    def __init__(self, root: Path, kind: str):
        self.root, self.kind = Path(root), kind
        self.path = self.root / MANIFEST_NAME
        self.entries: dict[str, dict] = {}
        self.exists = False
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return  # unreadable: treated as empty, everything is rebuilt
        self.exists = True
        if data.get("version") == FORMAT_VERSION and data.get("kind") == self.kind:
            self.entries = data.get("entries", {})

    # ---- state -------------------------------------------------------------------------------
    def part_state(self, key: str, part: str, want: Want) -> tuple[str, str]:
        """("fresh" | "stale" | "missing", why)."""
        have = self.entries.get(key, {}).get("parts", {}).get(part)
        if have is None:
            return "missing", f"{part}: not cached yet"
        if not (self.root / have["file"]).is_file():
            return "missing", f"{part}: cache file {have['file']} is gone"
        if have.get("fingerprint") != want.fingerprint:
            return "stale", f"{part}: the input changed"
        if have.get("settings") != want.settings:
            changed = sorted(k for k in set(have.get("settings", {})) | set(want.settings)
                             if have.get("settings", {}).get(k) != want.settings.get(k))
            return "stale", f"{part}: settings changed ({', '.join(changed)})"
        return "fresh", ""

    def report(self, wanted: dict[str, dict[str, Want]]) -> CacheReport:
        out = CacheReport(removed=len(set(self.entries) - set(wanted)))
        for key, parts in wanted.items():
            states = [self.part_state(key, part, want) for part, want in parts.items()]
            worst = "missing" if any(s == "missing" for s, _ in states) else (
                "stale" if any(s == "stale" for s, _ in states) else "fresh")
            setattr(out, worst, getattr(out, worst) + 1)
            if worst != "fresh":
                out.reasons.append((key, "; ".join(why for s, why in states if s != "fresh")))
        return out

    # ---- writing -----------------------------------------------------------------------------
    def file_for(self, key: str, part: str, want: Want, compress: bool) -> str:
        digest = sha256_text(stable_json([key, part, want.fingerprint, want.settings]))
        return f"{part}/{digest[:2]}/{digest}.safetensors" + (".gz" if compress else "")

    def put(self, key: str, source: str, part: str, want: Want, tensors: dict[str, torch.Tensor],
            compress: bool = False) -> None:
        """Write one part's tensors (atomically) and point the entry at them; `save()` commits."""
        rel = self.file_for(key, part, want, compress)
        write_tensors(self.root / rel, tensors)
        entry = self.entries.setdefault(key, {"source": source, "parts": {}})
        entry["source"] = source
        entry["parts"][part] = {"fingerprint": want.fingerprint, "settings": want.settings, "file": rel}

    def keep_only(self, keys: set[str]) -> int:
        """Drop entries of items that are gone; returns how many."""
        gone = set(self.entries) - keys
        for key in gone:
            del self.entries[key]
        return len(gone)

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        record = {"version": FORMAT_VERSION, "kind": self.kind, "entries": self.entries}
        atomic_write(self.path, json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))
        self.exists = True

    def collect_garbage(self, parts: tuple[str, ...]) -> int:
        """Delete tensor files of `parts` that no entry references (after `save()`)."""
        used = {p["file"] for e in self.entries.values() for p in e.get("parts", {}).values()}
        removed = 0
        for part in parts:
            folder = self.root / part
            if not folder.is_dir():
                continue
            for path in folder.rglob("*"):
                if path.is_file() and path.relative_to(self.root).as_posix() not in used:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # ---- reading -----------------------------------------------------------------------------
    def tensor_file(self, key: str, part: str) -> Path:
        return self.root / self.entries[key]["parts"][part]["file"]


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    data = save_safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write(path, data)


def read_tensors(path: Path, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Read some (or all) tensors of a cache file; plain files read only what is asked for."""
    if path.name.endswith(".gz"):
        tensors = load_safetensors_bytes(gzip.decompress(path.read_bytes()))
        return tensors if names is None else {n: tensors[n] for n in names}
    with safe_open(str(path), framework="pt") as fh:
        return {n: fh.get_tensor(n) for n in (names if names is not None else fh.keys())}
