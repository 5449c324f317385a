"""Strict `key=value` parsing for free-form argument strings (optimizer args, network args)."""
from __future__ import annotations

import re

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_key_values(text: str) -> dict[str, object]:
    """Strict `key=value` parser for optimizer/network args: numbers, booleans, plain words; never eval.

    Pairs are separated by spaces or commas. Anything else raises ValueError naming the bad pair.
    """
    out: dict[str, object] = {}
    for pair in (p for p in re.split(r"[\s,]+", text.strip()) if p):
        key, sep, raw = pair.partition("=")
        if not sep or not _KEY.match(key) or not raw or "=" in raw:
            raise ValueError(f"bad pair {pair!r}: expected key=value with a plain key "
                             "(letters, digits, _) and a number, true/false or a plain word")
        if raw.lower() in ("true", "false"):
            value: object = raw.lower() == "true"
        elif _NUMBER.match(raw):
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        elif _WORD.match(raw):
            value = raw
        else:
            raise ValueError(f"bad value in {pair!r}: only numbers, true/false and plain words are allowed")
        out[key] = value
    return out
