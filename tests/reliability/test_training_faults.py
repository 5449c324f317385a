"""Issue #18 items 1, 3, 8 and 8b on the tiny SD 1.5 preset: a diverged run never leaves a poisoned
checkpoint and resume skips one; a full disk is named and leaves no staging folder; a finished run
folder is not silently replaced; "train longer" continues at the next step."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import REPO, read_progress, run_studio, studio_cmd
from studio.train import checkpoint as ckpt
from studio.train import disk
from studio.train.health import first_non_finite

PRESET = str(REPO / "presets" / "tiny-sd15-lora.json")
QUIET = ["--set", "sampling.every_steps=0", "--set", "sampling.at_end=false", "--set", "logging.tensorboard=false",
         "--no-progress"]


def train_args(run_dir: Path, *sets: str) -> list[str]:
    return ["train", PRESET, "--set", f"job.output_dir={run_dir}", *QUIET,
            *[x for item in sets for x in ("--set", item)]]


def train_in_process(capsys, run_dir: Path, *sets: str) -> tuple[int, str]:
    from studio.cli import main

    capsys.readouterr()
    rc = main(train_args(run_dir, *sets))
    captured = capsys.readouterr()
    return rc, captured.out + captured.err + (run_dir / "console.log").read_text(errors="replace") \
        if (run_dir / "console.log").exists() else captured.out + captured.err


def error_message(run_dir: Path) -> str:
    errors = [r for r in read_progress(run_dir) if r.get("event") == "error"]
    assert errors, "the run must end with an error event"
    return errors[-1]["message"]


def really_finite(path: Path) -> bool:
    """Read the tensors themselves (not the manifest's word)."""
    state = torch.load(path / "optimizer.pt", weights_only=True)["state"]
    return first_non_finite(load_file(str(path / "trainable.safetensors")), state) is None


def poison(checkpoint: Path) -> None:
    """NaN weights and no "finite" in the manifest: what a version before the check could commit."""
    weights = load_file(str(checkpoint / "trainable.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, str(checkpoint / "trainable.safetensors"))
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest.pop("finite", None)
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


DIVERGE = ["optimizer.name=adamw", "training.learning_rate=10", "training.max_grad_norm=0",
           "checkpointing.save_steps=1", "checkpointing.max_checkpoints=20", "logging.logging_steps=1",
           "training.max_steps=12"]


@pytest.mark.slow
def test_a_diverged_run_commits_no_poisoned_checkpoint_and_resume_skips_one(tmp_path):
    run_dir = tmp_path / "nan"
    result = run_studio(*train_args(run_dir, *DIVERGE), timeout=600)
    assert result.returncode == 1, result.stderr
    message = error_message(run_dir)
    committed = ckpt.list_checkpoints(run_dir)
    assert committed, "steps before the divergence were checkpointed"
    last_good = committed[-1]
    assert f"the last good checkpoint is {last_good.name}" in message
    assert all(really_finite(p) for p in committed)
    assert not list(run_dir.glob(".tmp-checkpoint-*"))
    assert "Traceback" not in result.stdout + result.stderr

    # A poisoned checkpoint committed by an older version (no "finite" in its manifest) is skipped.
    step = int(last_good.name.split("-")[1])
    poisoned = run_dir / f"checkpoint-{step + 1}"
    shutil.copytree(last_good, poisoned)
    poison(poisoned)
    # max_steps = the good step: the run resumes there, has nothing left to train, and finishes from the
    # good state (at lr 10 its gradients already overflow: training on would diverge again).
    again = run_studio(*train_args(run_dir, "checkpointing.auto_resume=true", f"training.max_steps={step}"),
                       timeout=600)
    assert again.returncode == 0, again.stderr
    resumed = [r for r in read_progress(run_dir) if r.get("event") == "resumed"][-1]
    assert resumed["checkpoint"] == str(last_good) and resumed["step"] == step
    assert f"skipping {poisoned.name}" in (run_dir / "console.log").read_text()


def _full_disk_error(*args, **kwargs):
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_disk_full_mid_save_is_named_and_leaves_no_staging(tmp_path, capsys, monkeypatch, tiny_sd15):
    run_dir = tmp_path / "full"
    calls = {"n": 0}
    real = ckpt.save_file

    def save_then_fill(*args, **kwargs):  # the second checkpoint meets a full disk
        calls["n"] += 1
        return real(*args, **kwargs) if calls["n"] == 1 else _full_disk_error()

    monkeypatch.setattr(ckpt, "save_file", save_then_fill)
    rc, text = train_in_process(capsys, run_dir, "training.max_steps=6", "checkpointing.save_steps=2")
    assert rc == 1
    message = error_message(run_dir)
    assert message.startswith(f"the disk holding {run_dir} is full")
    assert "the last committed checkpoint is checkpoint-2" in message
    assert not list(run_dir.glob(".tmp-checkpoint-*"))
    assert [p.name for p in ckpt.list_checkpoints(run_dir)] == ["checkpoint-2"]
    assert "Traceback" not in text


def test_a_nearly_full_disk_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(disk, "free_bytes", lambda path: 5 * 2**20)
    rc, text = train_in_process(capsys, tmp_path / "run")
    assert rc == 1
    assert f"the disk holding {tmp_path / 'run'} is full (5 MiB free" in text
    assert not (tmp_path / "run").exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB file system (needs root, as in CI's container); skipped where mount is refused."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_tmpfs(small_tmpfs, capsys, monkeypatch, tiny_sd15):
    """ENOSPC from the real writers (safetensors / torch.save) on a 1 MiB disk: the checkpoint that does
    not fit is named, its staging folder removed, and the one before is intact."""
    monkeypatch.setattr(disk, "require_space", lambda *a, **k: None)  # let the writers meet the wall
    run_dir = small_tmpfs / "run"
    rc, text = train_in_process(capsys, run_dir, "training.max_steps=12", "checkpointing.save_steps=2",
                                "checkpointing.max_checkpoints=5")
    assert rc == 1
    message = error_message(run_dir)
    assert message.startswith(f"the disk holding {run_dir} is full")
    last = ckpt.latest_checkpoint(run_dir)
    assert last is not None and f"the last committed checkpoint is {last.name}" in message
    assert really_finite(last)
    assert not list(run_dir.glob(".tmp-checkpoint-*"))


def test_a_finished_run_is_not_replaced_and_train_longer_continues(tmp_path, capsys, tiny_sd15):
    run_dir = tmp_path / "long"
    sets = ["training.max_steps=4", "checkpointing.save_steps=2"]
    assert train_in_process(capsys, run_dir, *sets)[0] == 0
    adapter = (run_dir / "adapter_model.safetensors").read_bytes()
    kohya = sorted(p.name for p in run_dir.glob("*_kohya.safetensors"))
    assert (run_dir / "checkpoint-4" / "manifest.json").is_file()  # the final state is resumable

    rc, text = train_in_process(capsys, run_dir, *sets)  # same folder, no auto_resume: refused, nothing touched
    assert rc == 2 and "job.output_dir" in text and "auto_resume" in text
    assert (run_dir / "adapter_model.safetensors").read_bytes() == adapter

    rc, _ = train_in_process(capsys, run_dir, "training.max_steps=6", "checkpointing.save_steps=2",
                             "checkpointing.auto_resume=true", "logging.logging_steps=1",
                             "training.learning_rate=0.0005")  # train longer (steps 5-6 only) at a new rate
    assert rc == 0
    progress = read_progress(run_dir)
    resumed = [r for r in progress if r.get("event") == "resumed"][-1]
    assert resumed["step"] == 4
    after = [r for r in progress[progress.index(resumed):] if "loss" in r and "event" not in r]
    assert [r["step"] for r in after] == [5, 6]
    assert all(r["lr"] == pytest.approx(0.0005) for r in after)  # the config's rate, not the checkpoint's
    assert sorted(p.name for p in run_dir.glob("*_kohya.safetensors")) == kohya  # the same file, not a second one

    from studio.queue.commands import launch_config

    assert launch_config({}, "retry")["job"]["overwrite"] is True  # the queue's retry starts afresh the same way
    rc, _ = train_in_process(capsys, run_dir, *sets, "job.overwrite=true")  # afresh: the old run is archived
    assert rc == 0
    archived = run_dir / "attempts" / "1"
    assert (archived / "adapter_model.safetensors").is_file() and (archived / "checkpoint-6").is_dir()
    assert [p.name for p in ckpt.list_checkpoints(run_dir)] == ["checkpoint-2", "checkpoint-4"]


@pytest.mark.slow
def test_kill_9_then_resume_skips_the_poisoned_checkpoint_and_the_staging_leftover(tmp_path):
    """SIGKILL a real run, then leave what a kill mid-save on a full disk and a poisoned commit leave:
    the restart removes the staging folder and resumes from the newest finite checkpoint."""
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(studio_cmd(*train_args(run_dir, "training.max_steps=5000", "checkpointing.save_steps=2",
                                                   "checkpointing.max_checkpoints=10", "logging.logging_steps=1")),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while len(ckpt.list_checkpoints(run_dir)) < 2:
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    committed = ckpt.list_checkpoints(run_dir)
    newest, good = committed[-1], committed[-2]
    poison(newest)
    staging = run_dir / ".tmp-checkpoint-99999"
    staging.mkdir(exist_ok=True)
    (staging / "optimizer.pt").write_bytes(b"half a file")
    step = int(good.name.split("-")[1])
    again = run_studio(*train_args(run_dir, "checkpointing.auto_resume=true", f"training.max_steps={step + 1}",
                                   "checkpointing.save_steps=2", "checkpointing.max_checkpoints=10"), timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = [r for r in read_progress(run_dir) if r.get("event") == "resumed"][-1]
    assert resumed["checkpoint"] == str(good) and resumed["step"] == step
    assert not staging.exists()
    assert really_finite(run_dir / f"checkpoint-{step + 1}")
