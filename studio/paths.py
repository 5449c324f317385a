"""Where the studio keeps its state: `STUDIO_HOME` (default `./workspace`)."""
from __future__ import annotations

import os
from pathlib import Path


def studio_home() -> Path:
    """Queue database, user presets, tiny models and default run folders live here."""
    if os.environ.get("STUDIO_HOME"):
        home = Path(os.environ["STUDIO_HOME"])
    elif os.environ.get("SPACE_ID"):  # Hugging Face Space: /data is the persistent volume
        home = Path("/data/studio")
    else:
        home = Path("workspace")
    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def tiny_model_dir(family: str, home: str | Path | None = None) -> Path:
    """Where `tiny:<family>` lives: `home/models/tiny-<family>` (written by studio.families.tiny)."""
    return Path(home if home is not None else studio_home()) / "models" / f"tiny-{family}"


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
