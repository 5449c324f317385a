"""Free space: checked at start and before each save, and a full disk reported in plain words.

A save that runs out of space (safetensors says "Error while serializing: I/O error: No space left
on device", torch.save raises OSError ENOSPC) removes its staging folder, so the full disk is not
made fuller by a half-written checkpoint, and names the last committed checkpoint.
"""
from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path

MARGIN = 64 * 2**20  # logs, samples and the final adapter beside the checkpoint
NEARLY_FULL = 2**20  # a write that failed with less than this left failed for want of space


class DiskFull(OSError):
    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(err) or "Disk quota exceeded" in str(err)


def _last_committed(run_dir: Path) -> str:
    from studio.runfolder.layout import latest_checkpoint

    last = latest_checkpoint(run_dir)
    return last.name if last is not None else "none yet"


def full_message(run_dir: Path, detail: str = "") -> str:
    return (f"the disk holding {run_dir} is full{detail}; the last committed checkpoint is "
            f"{_last_committed(run_dir)}. Free space (or move the run folder), then resume")


def free_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists():  # the run folder may not exist yet: ask its nearest existing parent
        path = path.parent
    return shutil.disk_usage(path).free


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def checkpoint_estimate(run_dir: Path, weights: dict, optimizer) -> int:
    """Bytes the next checkpoint needs: the last one's size, else weights x 2 (trainable + adapter
    copy) plus the optimizer's tensors."""
    from studio.runfolder.layout import latest_checkpoint
    from studio.train.health import _tensors

    last = latest_checkpoint(run_dir)
    if last is not None:
        return sum(p.stat().st_size for p in last.iterdir() if p.is_file())
    return 2 * tensor_bytes(weights.values()) + tensor_bytes(_tensors(optimizer.state_dict()["state"]))


def require_space(run_dir: Path, needed: int, what: str) -> None:
    free = free_bytes(run_dir)
    if free < needed + MARGIN:
        raise DiskFull(full_message(run_dir, f" ({free / 2**20:.0f} MiB free, {what} needs about "
                                             f"{(needed + MARGIN) / 2**20:.0f} MiB)"))


@contextmanager
def staging(run_dir: Path, tmp: Path):
    """Write a checkpoint into `tmp`; on a full disk remove `tmp` and raise DiskFull."""
    try:
        yield tmp
    except Exception as err:
        # torch.save on a full disk can say only "[enforce fail at inline_container.cc] unexpected pos":
        # the free space left (measured before the staging folder is removed) tells.
        full = is_disk_full(err) or free_bytes(run_dir) < NEARLY_FULL
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise DiskFull(full_message(run_dir)) from None
        raise
