"""The installed environment is the locked, tested one; drift and known-bad sets are named."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from studio import lockcheck

REPO = Path(__file__).resolve().parents[2]


def test_installed_packages_are_the_locked_versions():
    # Fails when CI (or a developer) runs the suite on versions other than the tested set.
    for lock in ("requirements.txt", "requirements-dev.txt"):
        findings = lockcheck.check(lock=REPO / lock)
        assert findings == [], f"{lock}:\n" + "\n".join(str(f) for f in findings)


def test_every_direct_requirement_is_pinned_in_both_locks():
    direct = {re.split(r"[<>=!~ ;#\[]", line, 1)[0].lower().replace("_", "-")
              for line in lockcheck._requirement_lines(REPO / "requirements.in")}
    for lock in ("requirements.txt", "requirements-dev.txt"):
        pinned = {line.split("==")[0].lower() for line in lockcheck._requirement_lines(REPO / lock) if "==" in line}
        assert direct <= pinned, f"{lock} lacks {sorted(direct - pinned)}: rerun scripts/relock.sh"
    # torch is pinned without a local build label, so a GPU machine gets its CUDA build of that release
    torch_line = next(l for l in lockcheck._requirement_lines(REPO / "requirements.txt") if l.startswith("torch=="))
    assert "+" not in torch_line


def test_a_version_outside_the_supported_range_is_an_error_naming_the_fix(tmp_path):
    ranges = tmp_path / "requirements.in"
    ranges.write_text("peft>=99.0\nsafetensors>=0.1\n")
    lock = tmp_path / "requirements.txt"
    lock.write_text("safetensors==0.0.1    # via -r requirements.in\n")
    findings = lockcheck.check(lock=lock, ranges=ranges)
    assert [(f.level, f.package) for f in findings] == [("error", "peft"), ("warning", "safetensors")]
    assert ">=99.0" in findings[0].message and "pip install -r requirements.txt" in findings[0].message
    assert "tested version is 0.0.1" in findings[1].message


def test_a_job_refuses_to_start_on_an_error_before_loading_anything(tmp_path, monkeypatch, capsys):
    from studio.cli import main

    ranges = tmp_path / "requirements.in"
    ranges.write_text("peft>=99.0\n")
    monkeypatch.setattr(lockcheck, "RANGES_FILE", ranges)
    # the config does not even exist: the environment is checked first, and nothing is created
    assert main(["train", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "environment" in err and "peft" in err and "STUDIO_ALLOW_UNTESTED" in err
    assert list(tmp_path.iterdir()) == [ranges]
    monkeypatch.setenv("STUDIO_ALLOW_UNTESTED", "1")
    lockcheck.enforce()  # the user's choice: a warning, and the job goes on (here to the missing config)
    assert "warning: environment: peft" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_a_torchvision_built_for_another_torch_is_a_known_bad_combination(tmp_path, monkeypatch):
    info = tmp_path / "torchvision-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.0.1\n"
                                   "Requires-Dist: torch==1.0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = lockcheck._torchvision_matches_torch()
    assert found is not None and found.level == "error"
    assert "torch==1.0.0" in found.message and "pip uninstall torchvision" in found.message


def test_studio_env_shows_the_lock_check():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "studio", "env"], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0
    assert "Lock check" in out.stdout and "requirements.txt" in out.stdout
