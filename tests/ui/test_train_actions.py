"""The Train tab's buttons: presets (save as, delete custom only, temporary edits), preview, queueing."""
from __future__ import annotations

import json

import pytest

from studio.config import ConfigError
from studio.config.presets import list_presets
from studio.queue import JobStore
from studio.ui import train_actions as act
from studio.ui.form_spec import field_specs, values_from_config

PATHS = [s.path for s in field_specs()]


def tiny_values(**edits):
    values = values_from_config(act.preset_config("tiny-sd15-lora"))
    for path, value in edits.items():
        values[PATHS.index(path.replace("__", "."))] = value
    return values


def test_save_as_then_delete_a_custom_preset(home):
    act.save_preset("my-style", "for tests", tiny_values(training__learning_rate=0.0005))
    assert ("my-style (custom)", "my-style") in act.preset_choices()
    saved = act.preset_config("my-style")
    assert saved["training"]["learning_rate"] == 0.0005 and saved["job"]["output_dir"] == ""
    act.delete_preset("my-style")
    assert "my-style" not in [p["name"] for p in list_presets()]
    with pytest.raises(ConfigError, match="system preset"):
        act.delete_preset("tiny-sd15-lora")
    with pytest.raises(ConfigError, match="system preset"):
        act.save_preset("tiny-sd15-lora", "", tiny_values())


def test_temporary_edits_leave_the_preset_alone(home):
    act.save_preset("mine", "", tiny_values())
    checked = act.check_values(tiny_values(training__max_steps=7))
    # temporary (the default): nothing written; non-temporary: the custom preset takes the edits
    assert act.preset_config("mine")["training"]["max_steps"] == 20
    note = act.keep_edits_in_preset("mine", checked)
    assert "updated" in note and act.preset_config("mine")["training"]["max_steps"] == 7
    assert "read-only" in act.keep_edits_in_preset("tiny-sd15-lora", checked)
    assert act.edited_paths(act.preset_config("tiny-sd15-lora"), checked.config.model_dump(mode="json")) == \
        ["training.max_steps"]


def test_preview_is_the_config_that_runs(home):
    checked = act.check_values(tiny_values(job__name="my-run"))
    preview = json.loads(act.preview_json(checked))
    assert preview["job"]["name"] == "my-run" and preview["job"]["output_dir"].endswith("runs/my-run")
    store = JobStore()
    act.add_to_queue(store, checked, start_now=False)
    assert store.list()[0].config == preview


def test_start_now_puts_the_job_first(home):
    store = JobStore()
    first = store.add(act.preset_config("tiny-sd15-lora"))
    message = act.add_to_queue(store, act.check_values(tiny_values()), start_now=True)
    pending = store.list(("pending",))
    assert pending[0].id != first.id and pending[1].id == first.id
    assert "starts now" in message


def test_missing_dataset_is_reported_before_queueing(home, tmp_path):
    checked = act.check_values(tiny_values(data__path=str(tmp_path / "nowhere")))
    assert not checked.ok and "data.path" in checked.problems
    assert "data.path" in act.problems_markdown(checked.problems)


def test_every_problem_is_reported_at_once(home, tmp_path):
    checked = act.check_values(tiny_values(training__learning_rate=-1, data__path=str(tmp_path / "nowhere"),
                                           evaluation__strategy="steps"))
    assert set(checked.problems) >= {"training.learning_rate", "data.path", "evaluation.strategy"}
