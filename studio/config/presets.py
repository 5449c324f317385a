"""Presets: partial configs merged over the defaults. System presets live in `presets/` (read-only);
user presets in `STUDIO_HOME/presets/` (save as, delete)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from studio.config.errors import ConfigError
from studio.config.loader import read_json, validate
from studio.config.schema import JobConfig
from studio.paths import repo_root, studio_home

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def system_dir() -> Path:
    return repo_root() / "presets"


def user_dir() -> Path:
    path = studio_home() / "presets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_presets() -> list[dict]:
    """[{name, kind: system|user, description, path}] sorted by name; a user preset may not shadow a system one."""
    out = []
    for kind, folder in (("system", system_dir()), ("user", user_dir())):
        for path in sorted(folder.glob("*.json")):
            try:
                description = json.loads(path.read_text(encoding="utf-8")).get("description", "")
            except (OSError, json.JSONDecodeError):
                description = "(unreadable)"
            out.append({"name": path.stem, "kind": kind, "description": description, "path": str(path)})
    return out


def preset_path(name: str) -> Path:
    for folder in (system_dir(), user_dir()):
        path = folder / f"{name}.json"
        if path.is_file():
            return path
    known = ", ".join(p["name"] for p in list_presets())
    raise ConfigError([("preset", f"no preset named {name!r}; known: {known}")])


def load_preset_data(name: str) -> dict:
    """The preset's partial config (without the description)."""
    return read_json(preset_path(name))


def load_preset(name: str) -> JobConfig:
    return validate(load_preset_data(name))


def save_user_preset(name: str, cfg: JobConfig | dict, description: str = "") -> Path:
    """Write a user preset atomically. System preset names are reserved."""
    if not _NAME.match(name):
        raise ConfigError([("preset", "use letters, digits, '-', '_' or '.', at most 64 characters")])
    if (system_dir() / f"{name}.json").exists():
        raise ConfigError([("preset", f"{name!r} is a system preset; save under another name")])
    data = cfg.model_dump(mode="json") if isinstance(cfg, JobConfig) else dict(cfg)
    validate(data)  # never save something that will not load
    data = {"description": description, **data}
    path = user_dir() / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def delete_user_preset(name: str) -> None:
    if (system_dir() / f"{name}.json").exists():
        raise ConfigError([("preset", f"{name!r} is a system preset and cannot be deleted")])
    path = user_dir() / f"{name}.json"
    if not path.exists():
        raise ConfigError([("preset", f"no user preset named {name!r}")])
    path.unlink()
