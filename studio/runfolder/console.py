"""`console.log`: everything the trainer prints, also when run in a terminal.

When the queue already sends stdout into console.log, the tee is skipped so nothing is written twice.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


class _Tee:
    def __init__(self, stream, fh):
        self.stream, self.fh = stream, fh

    def write(self, data):
        self.stream.write(data)
        if not self.fh.closed:  # a thread may still log after the run closed console.log
            self.fh.write(data)
        return len(data)

    def flush(self):
        self.stream.flush()
        if not self.fh.closed:
            self.fh.flush()

    def isatty(self):
        return self.stream.isatty()

    def fileno(self):
        return self.stream.fileno()

    def __getattr__(self, name):
        return getattr(self.stream, name)


# Import-time warnings of optional compiled parts the studio does not use, printed by every job that imports
# diffusers: torchao's prebuilt CUDA/CPU extensions that do not load with this torch, the quantized tensor
# classes diffusers' torchao loader looks for (only needed to read checkpoints saved by torchao itself;
# the studio quantizes at load), torch's notice about torchao's enum registration, and bitsandbytes' optional
# CPU kernel from the `kernels` hub package. Errors from the same loggers still show.
IMPORT_NOISE_LOGGERS = ("torchao", "diffusers.quantizers.torchao.torchao_quantizer", "torch.utils._pytree",
                        "bitsandbytes.backends.cpu.ops")


def quiet_import_noise() -> None:
    import logging

    for name in IMPORT_NOISE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _already_captured(path: Path) -> bool:
    try:
        return path.exists() and os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(path))
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def log_to_stdout(level: str):
    """Route `logging` to the current sys.stdout for the duration of a run, then restore the handlers
    (in-process runs, as in tests and the bench, must not leave a handler on a closed console.log)."""
    import logging

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(level.upper())
    try:
        yield
    finally:
        root.handlers, root.level = saved_handlers, saved_level


@contextlib.contextmanager
def capture_console(path: Path):
    if _already_captured(path):
        yield
        return
    with open(path, "a", encoding="utf-8", buffering=1) as fh:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(old_out, fh), _Tee(old_err, fh)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = old_out, old_err
