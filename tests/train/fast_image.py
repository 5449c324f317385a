"""A few-step tiny image-family config on the CPU for the memory-engine tests (test_flow's fast settings)."""
from __future__ import annotations

from studio.config import deep_merge, finalize_job, load_config
from studio.registry.families import demo_config
from tests.families.fixed_batch import FAST as FLOW_FAST

FAST = deep_merge(FLOW_FAST, {"model": {"device": "cpu"}})


def image_cfg(family: str, *extras: dict):
    """The family's demo config with FAST and `extras` merged over it, validated."""
    merged = deep_merge(demo_config(family), FAST)
    for extra in extras:
        merged = deep_merge(merged, extra)
    return finalize_job(load_config(merged))
