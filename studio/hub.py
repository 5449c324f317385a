"""Optional upload of a finished run to the Hugging Face Hub (FIELDS §17)."""
from __future__ import annotations

from pathlib import Path

UPLOAD_PATTERNS = ["adapter_model.safetensors", "adapter_config.json", "*_kohya.safetensors",
                   "training_args.json", "samples/*", "README.md"]


def push_run(run_dir: Path, cfg, progress) -> str | None:
    """Upload the final files; a failure is reported as a warning, the local run stays complete."""
    from huggingface_hub import HfApi

    try:
        api = HfApi(endpoint=cfg.hub.endpoint or None)
        api.create_repo(cfg.hub.model_id, private=cfg.hub.private, exist_ok=True)
        info = api.upload_folder(repo_id=cfg.hub.model_id, folder_path=str(run_dir), allow_patterns=UPLOAD_PATTERNS,
                                 commit_message=f"Training Studio: {cfg.job.name} step {progress.total}")
        progress.event("pushed", repo=cfg.hub.model_id, url=str(getattr(info, "commit_url", "")))
        return cfg.hub.model_id
    except Exception as err:  # noqa: BLE001 - network, auth, quota: all are reported the same way
        progress.event("warning", message=f"push to the Hub failed: {err}")
        return None
