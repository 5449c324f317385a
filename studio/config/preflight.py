"""Checks that need the file system, run before any job starts (CLI, queue add, UI "Add to queue").

The schema accepts partial configs (a preset may leave the dataset open); a job that is about to run
must name existing inputs. Light imports only: the UI calls this on every validation.
"""
from __future__ import annotations

from pathlib import Path

from studio.config.errors import ConfigError

HUB_HINT = "a local folder or file, a hub id `user/name`, or tiny:<family>"


# Hub ids may hold dots (`Qwen/Qwen2.5-0.5B`); only a weight/config file suffix marks a local file.
FILE_SUFFIXES = (".safetensors", ".ckpt", ".gguf", ".bin", ".pt", ".pth", ".json")


def looks_like_hub_id(path: str) -> bool:
    return (not path.startswith((".", "/", "~")) and path.count("/") == 1
            and Path(path).suffix.lower() not in FILE_SUFFIXES)


def preflight_problems(cfg) -> list[tuple[str, str]]:
    problems = []
    if not cfg.data.path.strip():
        problems.append(("data.path", "required: the training data folder or file"))
    for key in ("path", "eval_path"):
        value = getattr(cfg.data, key)
        if value and not value.startswith("demo:") and not Path(value).expanduser().exists():
            problems.append((f"data.{key}", f"not found: {value}"))
    path = cfg.model.path.strip()
    if not path:
        problems.append(("model.path", f"required: {HUB_HINT}"))
    elif not path.startswith("tiny:") and not looks_like_hub_id(path) and not Path(path).expanduser().exists():
        problems.append(("model.path", f"not found: {path} ({HUB_HINT})"))
    resume = cfg.checkpointing.resume_from
    if resume and not (Path(resume) / "manifest.json").is_file():
        problems.append(("checkpointing.resume_from", f"{resume} is not a complete checkpoint folder "
                         "(checkpoint-<step> with a manifest.json)"))
    return problems


def preflight(cfg) -> None:
    problems = preflight_problems(cfg)
    if problems:
        raise ConfigError(problems)
