"""Checks while editing the Train form: the touched field gets its own problem at once, untouched ones
stay quiet, a fixed field is cleared, and only fields whose message changed are sent."""
from __future__ import annotations

import gradio as gr
import pytest

from studio.ui.field_checks import Shown, all_shown, check_edit
from studio.ui.form_spec import field_specs, values_from_config
from studio.ui.forms import build_form, field_elem_id
from studio.ui.train_actions import preset_config


@pytest.fixture(scope="module")
def form():
    with gr.Blocks():
        return build_form({})


def test_the_touched_field_shows_its_problem_and_is_cleared_when_fixed(form, home):
    paths = [s.path for s in field_specs()]
    values = values_from_config(preset_config("tiny-sd15-lora"))
    values[paths.index("adapter.rank")] = 0
    values[paths.index("training.max_steps")] = -5  # wrong too, but not touched yet
    updates, shown = check_edit(form, Shown(), field_elem_id("adapter.rank"), values)
    rank, steps = updates[paths.index("adapter.rank")], updates[paths.index("training.max_steps")]
    assert "greater than or equal to 1" in rank["info"] and rank["elem_classes"] == ["field-error"]
    assert steps == gr.skip() and set(shown.problems) == {"adapter.rank"}
    assert sum(u != gr.skip() for u in updates) == 1  # one field changed: one update sent
    # The field just left is redrawn even when `shown` says it is clean (an answer that crossed this one).
    updates, _ = check_edit(form, Shown(), field_elem_id("data.resolution"), values)
    assert updates[paths.index("data.resolution")]["elem_classes"] == []

    values[paths.index("adapter.rank")] = 8
    updates, shown = check_edit(form, shown, field_elem_id("adapter.rank"), values)
    rank = updates[paths.index("adapter.rank")]
    assert rank["elem_classes"] == [] and "⚠" not in rank["info"] and shown.problems == {}

    # After Add to queue showed everything, every problem follows the edits.
    updates, shown = check_edit(form, all_shown({"training.max_steps": "old"}), "", values)
    assert "greater than" in updates[paths.index("training.max_steps")]["info"]
