"""`hub.push_checkpoints`: each committed checkpoint is uploaded in the background; a failed upload is a
warning and never stops training. There is no network here, so huggingface_hub's `HfApi` is replaced
at that one boundary by a recorder; everything else (the trainer, checkpoints, staging) is real."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from studio.runfolder import ProgressLog, read_outcome, read_progress


class Recorder:
    """Stands in for `HfApi.upload_folder`: notes what it was given and the files it could read."""

    def __init__(self, fail_on: set[str] = frozenset()):
        self.calls: list[dict] = []
        self.fail_on = fail_on
        self.threads: set[str] = set()

    def __call__(self, *, repo_id, folder_path, path_in_repo, commit_message):
        self.threads.add(threading.current_thread().name)
        files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append({"repo": repo_id, "path_in_repo": path_in_repo, "files": files, "message": commit_message})
        if Path(folder_path).name in self.fail_on:
            raise ConnectionError("no route to huggingface.co")
        return type("Info", (), {"commit_url": f"https://hub/{path_in_repo}"})()


def _cfg():
    from studio.config import load_config

    return load_config({"model": {"family": "causal_lm", "path": "tiny:causal_lm"}, "job": {"name": "j"},
                        "hub": {"push_to_hub": True, "model_id": "me/lora", "push_checkpoints": True}})


def _checkpoint(run_dir: Path, step: int) -> Path:
    folder = run_dir / f"checkpoint-{step}"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"w" * 10)
    (folder / "sub" / "state.pt").write_bytes(b"s")
    return folder


def test_each_checkpoint_goes_to_its_own_folder_in_the_repo_and_a_failure_is_a_warning(tmp_path):
    from studio.hub import CheckpointPusher

    progress = ProgressLog(tmp_path, total_steps=4)
    upload = Recorder(fail_on={"checkpoint-2"})
    pusher = CheckpointPusher(_cfg(), progress, upload=upload)
    for step in (2, 4):
        pusher.push(_checkpoint(tmp_path, step), step)
    pusher.close()
    progress.event("done", step=4)
    progress.close()
    assert [c["path_in_repo"] for c in upload.calls] == ["checkpoints/checkpoint-2", "checkpoints/checkpoint-4"]
    assert all(c["files"] == ["adapter_model.safetensors", "sub/state.pt"] and c["repo"] == "me/lora"
               for c in upload.calls)
    assert upload.threads == {"hub-checkpoint-push"}  # never on the training thread
    records = read_progress(tmp_path)[0]
    warning = [r for r in records if r.get("event") == "warning"]
    assert len(warning) == 1 and "checkpoint-2" in warning[0]["message"] and warning[0]["step"] == 2
    assert [r["checkpoint"] for r in records if r.get("event") == "pushed"] == ["checkpoint-4"]
    assert (tmp_path / "checkpoint-2" / "adapter_model.safetensors").is_file()  # the run's own files stay


def test_pruning_during_an_upload_does_not_take_its_files(tmp_path):
    """The upload reads a staged copy, so removing the checkpoint (max_checkpoints) right away is safe."""
    import shutil

    from studio.hub import CheckpointPusher

    release = threading.Event()
    upload = Recorder()

    def slow(**kw):
        release.wait(10)
        return upload(**kw)

    progress = ProgressLog(tmp_path, total_steps=2)
    pusher = CheckpointPusher(_cfg(), progress, upload=slow)
    pusher.push(_checkpoint(tmp_path, 2), 2)
    shutil.rmtree(tmp_path / "checkpoint-2")
    release.set()
    pusher.close()
    progress.close()
    assert upload.calls[0]["files"] == ["adapter_model.safetensors", "sub/state.pt"]


def test_a_final_event_wins_over_later_background_reports(tmp_path):
    """The queue decides a job's status by its final event; a late upload warning must not hide it."""
    progress = ProgressLog(tmp_path, total_steps=1)
    progress.event("stopped", step=1)
    progress.event("warning", message="upload of checkpoint-1 to the Hub failed")
    progress.close()
    assert read_outcome(tmp_path).last_event == "stopped"


@pytest.mark.slow
def test_training_uploads_every_committed_checkpoint_and_still_completes(tmp_path, monkeypatch):
    import huggingface_hub

    from tests.llm.conftest import train_in_process

    upload = Recorder(fail_on={"checkpoint-2"})

    class FakeApi:
        def create_repo(self, repo_id, private, exist_ok):
            return repo_id

        def upload_folder(self, **kw):
            if "path_in_repo" in kw:
                return upload(**kw)
            return type("Info", (), {"commit_url": "https://hub/final"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    records = train_in_process(tmp_path / "run", [
        "training.max_steps=6", "checkpointing.save_steps=2", "checkpointing.max_checkpoints=1",
        "evaluation.strategy=no", "sampling.prompts=[]", "sampling.at_end=false",
        "hub.push_to_hub=true", "hub.model_id=me/lora", "hub.push_checkpoints=true"])
    # every committed checkpoint, the final step's too (kept resumable so a run can be continued)
    assert [c["path_in_repo"] for c in upload.calls] == ["checkpoints/checkpoint-2", "checkpoints/checkpoint-4",
                                                        "checkpoints/checkpoint-6"]
    assert any(r.get("event") == "warning" and "checkpoint-2" in r["message"] for r in records)
    assert records[-1]["event"] == "done" and records[-1]["step"] == 6
