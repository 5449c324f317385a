"""One error type for every config problem, so the CLI can exit 2 and the UI can show each field."""
from __future__ import annotations


class ConfigError(Exception):
    """A list of (field path, message) problems, reported together."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("\n".join(f"  {path}: {msg}" for path, msg in self.problems))

    @property
    def by_field(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for path, msg in self.problems:
            out[path] = f"{out[path]}; {msg}" if path in out else msg
        return out
