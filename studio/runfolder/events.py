"""The names of the events in `progress.jsonl`: one enum that writers and readers share.

A record without an `event` key is a step record (`step`, `total`, `loss`, `lr`, ...). `Event` is a
`str` enum, so it is written as its plain name and compares equal to the string read back.
"""
from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    LOADING = "loading"  # a model (or its encoders) is being loaded; `message` says which
    SCAN = "scan"  # dataset scan: counts and the bad / warned files
    START = "start"  # the loop starts (or resumes) at `step` of `total`
    RESUMED = "resumed"  # state restored from a checkpoint
    CHECKPOINT = "checkpoint"  # a checkpoint was committed at `path`
    SAVED = "saved"  # a final file (adapter, kohya file, merged model) was written and checked
    SAMPLE = "sample"  # a sample was written
    EVAL = "eval"  # evaluation loss / metrics
    WARNING = "warning"  # something the user should know; the run goes on
    CACHE_STATE = "cache_state"  # preprocess: fresh / stale / missing counts of a cache
    PUSHED = "pushed"  # uploaded to the Hugging Face hub
    GENERATING = "generating"  # a Playground job renders its result
    DONE = "done"  # final: finished (exit 0)
    STOPPED = "stopped"  # final: stopped on request (exit 0 or 130)
    ERROR = "error"  # final: failed; `message` says why (exit 1)


FINAL_EVENTS = (Event.DONE, Event.STOPPED, Event.ERROR)


def is_step(record: dict) -> bool:
    """A step record (the trainer's per-step line), as opposed to an event."""
    return "event" not in record and "step" in record
