"""Shared test set-up: offline, a session-wide STUDIO_HOME for tiny models, helpers to run the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # Nothing in the tests may reach the network: the hub client must fail fast, not hang.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    # The tiny models are too small to gain from two threads, and with the trainer subprocess, the
    # app and the browser sharing 2 cores, oversubscribed threads made steps ~100x slower here.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # pytest -n: each worker writes its own tiny models (two writers of one folder would race)
        os.environ["STUDIO_HOME"] = tempfile.mkdtemp(prefix=f"studio-test-home-{worker}-")
    else:
        os.environ.setdefault("STUDIO_HOME", tempfile.mkdtemp(prefix="studio-test-home-"))
    config.addinivalue_line("markers", "slow: trains a tiny model end to end (still part of the default run)")
    config.addinivalue_line("markers", "browser: drives the UI in headless Chromium")


@pytest.fixture
def studio_home(tmp_path, monkeypatch) -> Path:
    """A private STUDIO_HOME for tests that inspect the queue database or presets."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("STUDIO_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_sd15() -> Path:
    from studio.families.tiny import ensure_tiny_model

    return ensure_tiny_model("sd15", os.environ["STUDIO_HOME"])


@pytest.fixture(scope="session")
def tiny_sdxl() -> Path:
    from studio.families.tiny import ensure_tiny_model

    return ensure_tiny_model("sdxl", os.environ["STUDIO_HOME"])


def studio_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "studio", *args]


def run_studio(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(studio_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def read_progress(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "progress.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps one process-wide state; a CLI run trains once per process, but tests train
    in-process many times with different precisions, so each test starts from a clean state."""
    yield
    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)


def checked_single_file(records: list[dict]) -> tuple[Path, list[str]]:
    """A run's adapter and single file were both saved and loaded back through diffusers' `load_lora_weights`:
    the single file's path and keys."""
    from safetensors import safe_open

    saved = {r["format"]: r for r in records if r.get("event") == "saved"}
    assert set(saved) == {"peft", "kohya"}
    for fmt in ("peft", "kohya"):
        assert saved[fmt]["verified"] is True and saved[fmt]["loader"] == "diffusers load_lora_weights", saved[fmt]
    single = Path(saved["kohya"]["path"])
    with safe_open(str(single), framework="pt") as f:
        return single, list(f.keys())
