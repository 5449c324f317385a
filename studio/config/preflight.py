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


def path_problems(data_path: str, eval_path: str, model_path: str, resume: str) -> list[tuple[str, str]]:
    """Missing inputs; plain strings, so a config that fails validation gets these named too."""
    problems = []
    if not data_path.strip():
        problems.append(("data.path", "required: the training data folder or file"))
    for key, value in (("path", data_path), ("eval_path", eval_path)):
        if value and not value.startswith("demo:") and not Path(value).expanduser().exists():
            problems.append((f"data.{key}", f"not found: {value}"))
    path = model_path.strip()
    if not path:
        problems.append(("model.path", f"required: {HUB_HINT}"))
    elif not path.startswith("tiny:") and not looks_like_hub_id(path) and not Path(path).expanduser().exists():
        problems.append(("model.path", f"not found: {path} ({HUB_HINT})"))
    if resume and not (Path(resume) / "manifest.json").is_file():
        problems.append(("checkpointing.resume_from", f"{resume} is not a complete checkpoint folder "
                         "(checkpoint-<step> with a manifest.json)"))
    return problems


def raw_problems(data: dict) -> list[tuple[str, str]]:
    """`path_problems` of a config dict that did not validate (a wrong type is left to the schema)."""
    def text(section: str, key: str) -> str:
        value = (data.get(section) or {}).get(key, "") if isinstance(data.get(section), dict) else ""
        return value if isinstance(value, str) else ""

    return path_problems(text("data", "path"), text("data", "eval_path"), text("model", "path"),
                         text("checkpointing", "resume_from"))


def preflight_problems(cfg, kind: str = "train") -> list[tuple[str, str]]:
    from studio.config.model_check import model_problems
    from studio.config.outdir import folder_problems, reuse_problems

    problems = path_problems(cfg.data.path, cfg.data.eval_path, cfg.model.path, cfg.checkpointing.resume_from)
    problems += model_problems(cfg.model.family, cfg.model.path, getattr(cfg.model, "extras_path", ""))
    problems += folder_problems(cfg.job.output_dir, [("data.path", cfg.data.path),
                                                      ("data.eval_path", cfg.data.eval_path)])
    if kind == "train":
        problems += reuse_problems(cfg)
        if not problems:  # the memory check reads the model folder: only for an otherwise runnable job
            from studio.config.vram_fit import fit_problems

            problems += fit_problems(cfg)[0]
    return problems


def preflight(cfg, kind: str = "train") -> None:
    problems = preflight_problems(cfg, kind)
    if problems:
        raise ConfigError(problems)
