"""Collect what the ecosystem's loaders warn about (keys they could not place, adapters they skipped),
so export verification can report them instead of letting them scroll past in the console."""
from __future__ import annotations

import contextlib
import logging


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def capture_loader_warnings(*logger_names: str):
    """`with capture_loader_warnings("diffusers", "transformers") as messages:` -> list of warning texts."""
    collector = _Collector()
    loggers = [logging.getLogger(name) for name in logger_names]
    for logger in loggers:
        logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        for logger in loggers:
            logger.removeHandler(collector)
