"""Optional uploads to the Hugging Face Hub (FIELDS §17): the finished run (`push_run`) and, with
`hub.push_checkpoints`, every committed checkpoint as it is written (`CheckpointPusher`).

A failed upload is a `warning` event, never an error: the local run is complete either way.
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

from studio.runfolder.events import Event

UPLOAD_PATTERNS = ["adapter_model.safetensors", "adapter_config.json", "*_kohya.safetensors",
                   "training_args.json", "samples/*", "README.md"]
log = logging.getLogger("studio.hub")


def push_run(run_dir: Path, cfg, progress) -> str | None:
    """Upload the final files; a failure is reported as a warning, the local run stays complete."""
    from huggingface_hub import HfApi

    try:
        api = HfApi(endpoint=cfg.hub.endpoint or None)
        api.create_repo(cfg.hub.model_id, private=cfg.hub.private, exist_ok=True)
        info = api.upload_folder(repo_id=cfg.hub.model_id, folder_path=str(run_dir), allow_patterns=UPLOAD_PATTERNS,
                                 commit_message=f"Training Studio: {cfg.job.name} step {progress.total}")
        progress.event(Event.PUSHED, repo=cfg.hub.model_id, url=str(getattr(info, "commit_url", "")))
        return cfg.hub.model_id
    except Exception as err:  # noqa: BLE001 - network, auth, quota: all are reported the same way
        progress.event(Event.WARNING, message=f"push to the Hub failed: {err}")
        return None


def _hub_upload(cfg) -> Callable[..., object]:
    """huggingface_hub's `upload_folder`, after creating the repository once."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(cfg.hub.model_id, private=cfg.hub.private, exist_ok=True)
    return api.upload_folder


class CheckpointPusher:
    """Uploads committed checkpoints to `hub.model_id` under `checkpoints/<name>/`, one at a time, on a
    background thread, so training never waits for the network.

    Each checkpoint is first hard-linked into a private staging folder (a copy where links fail), so
    pruning old checkpoints while an upload runs cannot pull files from under it. `upload` is
    huggingface_hub's `HfApi.upload_folder` (made on first use); tests pass their own.
    """

    def __init__(self, cfg, progress, upload: Callable[..., object] | None = None):
        self.cfg, self.progress, self._upload = cfg, progress, upload
        self._queue: queue.Queue = queue.Queue()
        self._staging = Path(tempfile.mkdtemp(prefix=".hub-push-"))
        self._thread = threading.Thread(target=self._work, name="hub-checkpoint-push", daemon=True)
        self._thread.start()

    @staticmethod
    def wanted(cfg) -> bool:
        return bool(cfg.hub.push_to_hub and cfg.hub.push_checkpoints)

    def push(self, checkpoint: Path, step: int) -> None:
        """Queue `checkpoint` (a committed checkpoint folder) for upload; returns at once."""
        staged = self._staging / Path(checkpoint).name
        shutil.rmtree(staged, ignore_errors=True)
        try:
            shutil.copytree(checkpoint, staged, copy_function=os.link)
        except OSError:  # another filesystem, or links not allowed
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(checkpoint, staged)
        self._queue.put((staged, step))

    def close(self) -> None:
        """Wait for the queued uploads, then remove the staging folder."""
        self._queue.put(None)
        self._thread.join()
        shutil.rmtree(self._staging, ignore_errors=True)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            staged, step = item
            try:
                if self._upload is None:
                    self._upload = _hub_upload(self.cfg)
                info = self._upload(repo_id=self.cfg.hub.model_id, folder_path=str(staged),
                                    path_in_repo=f"checkpoints/{staged.name}",
                                    commit_message=f"Training Studio: {self.cfg.job.name} checkpoint step {step}")
                self.progress.event(Event.PUSHED, step=step, repo=self.cfg.hub.model_id, checkpoint=staged.name,
                                    url=str(getattr(info, "commit_url", "")))
            except Exception as err:  # noqa: BLE001 - network, auth, quota: a warning, training goes on
                log.warning("checkpoint %s was not uploaded: %s", staged.name, err)
                self.progress.event(Event.WARNING, step=step,
                                    message=f"upload of {staged.name} to the Hub failed: {err}")
            finally:
                shutil.rmtree(staged, ignore_errors=True)
