"""Turn a preset / JSON file / dict plus `--set` overrides into a validated `JobConfig`.

Merge order (later wins): schema defaults < the family's defaults < the file < `--set` overrides.
"""
from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from studio.config.errors import ConfigError
from studio.config.preflight import raw_problems
from studio.registry.families import family_defaults
from studio.config.schema import SECTIONS, JobConfig
from studio.config.sections.job_model import ModelSection

JSON_STARTS = ("[", "{", '"')


def deep_merge(base: dict, over: dict) -> dict:
    """Recursively merge `over` into a copy of `base` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value); value is JSON when it parses, else a string."""
    if "=" not in item:
        raise ConfigError([(item, "an override must look like section.key=value")])
    path, raw = item.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if len(keys) < 2 or keys[0] not in SECTIONS:
        raise ConfigError([(path, f"expected section.key with a section among: {', '.join(SECTIONS)}")])
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        if raw.lstrip().startswith(JSON_STARTS):  # meant as JSON: a typo must not become a string
            raise ConfigError([(".".join(keys), f"the value {raw!r} starts like JSON but does not parse "
                                f"({err.msg} at column {err.colno}); write valid JSON, e.g. "
                                '\'["to_q","to_v"]\', or a plain string without a leading [ { or "')]) from None
        value = raw
    return keys, value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    out = copy.deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError([(".".join(keys), f"'{key}' is not a section")])
        node[keys[-1]] = value
    return out


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([(str(path), "config file not found")])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError([(str(path), f"not valid JSON: {err}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([(str(path), "the config must be a JSON object")])
    data.pop("$schema", None)
    data.pop("description", None)  # presets carry a one-line description for the UI
    return data


def validate(data: dict) -> JobConfig:
    """Validate a full or partial config dict (family defaults are merged underneath)."""
    model = data.get("model")
    default = ModelSection.model_fields["family"].default
    family = model.get("family", default) if isinstance(model, dict) else default
    # A family of the wrong type gets the default family's values underneath; the schema names the field.
    merged = deep_merge(family_defaults(family if isinstance(family, str) else default), data)
    try:
        return JobConfig.model_validate(merged)
    except ValidationError as err:
        problems = [(_loc(e["loc"]), _msg(e)) for e in err.errors()]
        named = {field for field, _ in problems}
        # Missing files are named with the bad values, not after they are fixed (issue #18 item 11).
        problems += [p for p in raw_problems(merged) if p[0] not in named]
        raise ConfigError(problems) from None


def load_config(source: str | Path | dict, overrides: Iterable[str] = ()) -> JobConfig:
    data = source if isinstance(source, dict) else read_json(source)
    return validate(apply_overrides(data, overrides))


def load_job(source: str | Path | dict, overrides: Iterable[str] = (), kind: str = "train") -> JobConfig:
    """A config about to run: validated, named, its run folder set, and every check that needs no model
    passed (preflight). A run continued in its folder keeps the job name it had there."""
    from studio.config.model_check import model_source_problems
    from studio.config.outdir import previous_job_name
    from studio.config.preflight import preflight_problems

    cfg = load_config(source, overrides)
    keep = "" if cfg.job.name or not cfg.checkpointing.auto_resume else previous_job_name(cfg.job.output_dir)
    cfg = finalize_job(cfg, keep or None)
    problems = preflight_problems(cfg, kind) + model_source_problems(cfg.model.family, cfg.model.path)
    if problems:
        raise ConfigError(problems)
    return cfg


def finalize_job(cfg: JobConfig, name: str | None = None) -> JobConfig:
    """Fill the job name (auto `{family}_{YYYYMMDD_HHMMSS}`) and default run folder; with a
    `hub.model_id` the run folder is its repository name under that folder (SimpleTuner's
    `--hub_model_id`, seed 002). Applying it twice changes nothing (the queue and the trainer both do)."""
    from studio.paths import studio_home

    out = cfg.model_copy(deep=True)
    out.job.name = name or out.job.name or default_job_name(out.model.family)
    if not out.job.output_dir:
        out.job.output_dir = str(studio_home() / "runs" / out.job.name)
    repo = hub_folder_name(out)
    if repo and Path(out.job.output_dir).name != repo:
        out.job.output_dir = str(Path(out.job.output_dir) / repo)
    return out


def hub_folder_name(cfg: JobConfig) -> str:
    """The local sub-folder named after `hub.model_id` (`user/name` -> `name`); empty when unset."""
    return cfg.hub.model_id.strip().strip("/").rsplit("/", 1)[-1]


def default_job_name(family: str, now: datetime | None = None) -> str:
    return f"{family}_{(now or datetime.now()).strftime('%Y%m%d_%H%M%S')}"


def _loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def _msg(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown setting (check the spelling; unknown keys are not allowed)"
    if error["type"] == "literal_error":
        return f"{error['msg']} (got {error.get('input')!r})"
    return f"{error['msg']} (got {error.get('input')!r})"
