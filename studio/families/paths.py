"""Resolve `model.path`: `tiny:<family>`, a local folder or file, or a hub id."""
from __future__ import annotations

from pathlib import Path


def resolve_model_path(path: str) -> str:
    """Return a local path or a hub id. `tiny:<family>` writes the tiny model into STUDIO_HOME once."""
    if path.startswith("tiny:"):
        from studio.families.tiny import ensure_tiny_model
        from studio.paths import studio_home

        return str(ensure_tiny_model(path[5:], studio_home()))
    local = Path(path).expanduser()
    if local.exists():
        return str(local.resolve())
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise FileNotFoundError(f"model.path: {path!r} is neither an existing file or folder nor a hub id "
                                "(`user/name`)")
    return path  # hub id: from_pretrained downloads it (needs network on the user's machine)
