"""Every field id of shared/FIELDS.md is offered (studio/config/field_ids.json names where) or deliberately
omitted (studio/config/omitted_fields.json says why), never both, never neither."""
from __future__ import annotations

import json
import os
import re
import typing
from pathlib import Path

import pytest

from studio.config.schema import JobConfig
from tests.conftest import REPO

CONFIG = REPO / "studio" / "config"


def fields_md() -> Path | None:
    """CI clones the repository with the shared folder beside it; elsewhere STUDIO_SHARED_DIR names it."""
    candidates = [REPO.parent / "shared" / "FIELDS.md"]
    if os.environ.get("STUDIO_SHARED_DIR"):
        candidates.insert(0, Path(os.environ["STUDIO_SHARED_DIR"]) / "FIELDS.md")
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="module")
def field_ids() -> list[str]:
    path = fields_md()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shared/FIELDS.md not found beside the repository (or in STUDIO_SHARED_DIR)")
        pytest.skip("shared/FIELDS.md not found; set STUDIO_SHARED_DIR to the shared folder")
    ids = re.findall(r"^\| ([A-Z]\d{2}) \|", path.read_text(encoding="utf-8"), re.M)
    assert len(ids) == len(set(ids)) and len(ids) >= 200, "FIELDS.md's id column was not read"
    return ids


def _load(name: str) -> dict[str, str]:
    data = json.loads((CONFIG / name).read_text(encoding="utf-8"))
    data.pop("_about")
    return data


def _setting_exists(path: str) -> bool:
    """`section.key` or `section.list_key.item_key` in the JobConfig schema."""
    model: typing.Any = JobConfig
    for part in path.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        annotation = fields[part].annotation
        inner = [a for a in typing.get_args(annotation) if hasattr(a, "model_fields")]
        for arg in typing.get_args(annotation):
            inner += [a for a in typing.get_args(arg) if hasattr(a, "model_fields")]
        model = annotation if hasattr(annotation, "model_fields") else (inner[0] if inner else None)
    return True


def test_every_field_is_offered_or_deliberately_omitted(field_ids):
    offered, omitted = _load("field_ids.json"), _load("omitted_fields.json")
    assert not set(offered) & set(omitted), f"both offered and omitted: {sorted(set(offered) & set(omitted))}"
    missing = [i for i in field_ids if i not in offered and i not in omitted]
    assert not missing, f"FIELDS.md ids neither offered nor omitted: {missing}"
    unknown = sorted((set(offered) | set(omitted)) - set(field_ids))
    assert not unknown, f"ids not in FIELDS.md: {unknown}"


def test_each_offered_field_points_at_something_real():
    from studio.queue.store import SETTINGS_DEFAULTS

    bad = []
    for fid, where in _load("field_ids.json").items():
        if where.startswith("studio/"):
            ok = (REPO / where).is_file()
        elif where.startswith("queue."):
            ok = where in SETTINGS_DEFAULTS
        else:
            ok = _setting_exists(where)
        if not ok:
            bad.append(f"{fid} -> {where}")
    assert not bad, f"field_ids.json points at nothing: {bad}"


def test_each_omission_has_a_reason():
    short = {fid: why for fid, why in _load("omitted_fields.json").items() if len(why.split()) < 4}
    assert not short, f"omissions need a reason: {short}"
