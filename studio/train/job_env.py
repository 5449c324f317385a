"""Environment variables of a job (FIELDS V03 `config_env`, H04 `hf_endpoint`), set in the job's own
process before any Hugging Face library is imported, so that they read them as if set in the shell.

`job.env_file` is a `KEY=VALUE` file (the `config.env` of SimpleTuner, seed 002): blank lines and `#`
comments are skipped, `export ` is allowed, values may be quoted. `hub.endpoint` becomes `HF_ENDPOINT`
(a Hub mirror) and wins over the file. Only the variable names are recorded in training_args.json.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from studio.config.errors import ConfigError

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def read_env_file(path: str) -> dict[str, str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError([("job.env_file", f"not found: {path} (a KEY=VALUE file, one variable a line)")])
    out: dict[str, str] = {}
    for number, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError([("job.env_file", f"{path} line {number}: expected KEY=VALUE, got {line!r}")])
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def job_environment(cfg) -> dict[str, str]:
    env = read_env_file(cfg.job.env_file) if cfg.job.env_file else {}
    if cfg.hub.endpoint:
        env["HF_ENDPOINT"] = cfg.hub.endpoint.rstrip("/")
    return env


def apply_job_environment(cfg) -> list[str]:
    """Set the job's variables in this process (the trainer's own); returns their names."""
    env = job_environment(cfg)
    os.environ.update(env)
    if "HF_ENDPOINT" in env:
        _retarget_loaded_hub_client(env["HF_ENDPOINT"])
    return sorted(env)


def _retarget_loaded_hub_client(endpoint: str) -> None:
    """huggingface_hub reads HF_ENDPOINT once, at import; a job run inside a process that imported it
    already (the UI, the tests) gets the endpoint set on its constants as well."""
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is None:
        return
    old = constants.ENDPOINT
    constants.ENDPOINT = endpoint
    constants.HUGGINGFACE_CO_URL_TEMPLATE = constants.HUGGINGFACE_CO_URL_TEMPLATE.replace(old, endpoint)
