"""The Train form is generated from the schema and loses nothing: for every preset, config -> form
values -> (through each component, as the browser would) -> config gives the same config. Its values
reach server functions as one packed input (studio/ui/form_events.py) that gives the same values, and
no server event of the page takes the form's fields as inputs (each such event left every later tab
switch slower in the browser)."""
from __future__ import annotations

import json

import gradio as gr
import pandas as pd
import pytest

from studio.config import validate
from studio.config.presets import list_presets
from studio.ui.form_spec import (config_from_values, field_specs, same_ui_value, spec_by_path,
                                 values_from_config)
from studio.ui.form_events import unpack
from studio.ui.forms import build_form, error_updates, visibility_updates
from studio.ui.train_actions import check_values, preset_config

PRESETS = [p["name"] for p in list_presets() if p["kind"] == "system"]


@pytest.fixture(scope="module")
def form():
    with gr.Blocks():
        return build_form({})


def through_browser(component, value):
    """What the server gets back after sending `value` to the component (no edit in between)."""
    return component.preprocess(component.postprocess(value))


def test_every_setting_has_a_component_and_help():
    specs = field_specs()
    assert len(specs) > 50
    assert all(s.help for s in specs), [s.path for s in specs if not s.help]
    kinds = {s.path: s.kind for s in specs}
    assert kinds["model.family"] == "choice" and kinds["memory.tf32"] == "bool"
    assert kinds["memory.gradient_checkpointing"] == "autobool"  # auto / on / off
    assert kinds["sampling.prompts"] == "table" and kinds["adapter.target_modules"] == "tags"
    assert kinds["dataloader.pin_memory"] == "tristate"
    assert spec_by_path()["adapter.dropout"].slider and not spec_by_path()["training.learning_rate"].slider


def test_a_typed_out_of_range_number_is_kept_and_named_not_clamped(form, home):
    """Rank 0 must not silently become 1 (a slider clamps typed values): a number box that says the
    range keeps the 0, and the schema's error names the field."""
    rank = form.component("adapter.rank")
    assert isinstance(rank, gr.Number) and "range 1 … 1024" in rank.info
    assert through_browser(rank, 0) == 0
    values = values_from_config(preset_config(PRESETS[0]))
    values[[s.path for s in field_specs()].index("adapter.rank")] = through_browser(rank, 0)
    problems = check_values(values).problems
    assert problems["adapter.rank"].startswith("Input should be greater than or equal to 1")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_round_trip_is_identity(name, form, home):
    config = preset_config(name)
    values = values_from_config(config)
    sent = [through_browser(c, v) for c, v in zip(form.components, values)]
    back = validate(config_from_values(sent)).model_dump(mode="json")
    assert back == config
    again = values_from_config(back)
    differing = [s.path for s, a, b in zip(field_specs(), values, again) if not same_ui_value(a, b)]
    assert differing == []


def test_edited_values_reach_the_config(form, home):
    config = preset_config(PRESETS[0])
    values = values_from_config(config)
    paths = [s.path for s in field_specs()]
    values[paths.index("training.batch_size")] = 3.0  # sliders send floats
    values[paths.index("adapter.target_modules")] = ["to_q", "to_v"]
    values[paths.index("dataloader.pin_memory")] = "off"
    columns = spec_by_path()["sampling.prompts"].columns
    row = {c.path: c.default for c in columns}
    prompts = pd.DataFrame([{**row, "prompt": "a blue square", "seed": 7}, {**row, "prompt": ""}],
                           columns=[c.path for c in columns])
    values[paths.index("sampling.prompts")] = prompts  # the blank row the table leaves is dropped
    cfg = validate(config_from_values(values))
    assert cfg.training.batch_size == 3 and isinstance(cfg.training.batch_size, int)
    assert cfg.adapter.target_modules == ["to_q", "to_v"]
    assert cfg.dataloader.pin_memory is False
    assert [(p.prompt, p.seed) for p in cfg.sampling.prompts] == [("a blue square", 7)]


def test_problems_are_named_per_field_and_shown_next_to_it(form, home):
    values = values_from_config(preset_config("tiny-sd15-lora"))
    paths = [s.path for s in field_specs()]
    values[paths.index("training.batch_size")] = 0
    values[paths.index("model.path")] = "tiny:nope"
    checked = check_values(values)
    assert not checked.ok
    assert set(checked.problems) >= {"training.batch_size", "model.path"}
    updates = error_updates(form, checked.problems)
    marked = {paths[i] for i, u in enumerate(updates) if u.get("elem_classes")}
    assert marked == set(checked.problems)
    assert "⚠" in updates[paths.index("training.batch_size")]["info"]
    assert updates[paths.index("training.seed")]["elem_classes"] == []  # others cleared


def test_settings_that_do_not_apply_are_hidden(form):
    paths = [s.path for s in form.specs]
    image = visibility_updates(form, "sd15", "lora", "")
    llm = visibility_updates(form, "causal_lm", "lora", "sft")
    assert image[paths.index("data.resolution")]["visible"] and not llm[paths.index("data.resolution")]["visible"]
    assert llm[paths.index("model.variant")]["visible"] and not image[paths.index("model.variant")]["visible"]
    lr = paths.index("training.learning_rate")
    assert image[lr]["visible"] and llm[lr]["visible"]
    limited = [s for s in form.specs if s.adapters]
    for spec in limited:  # adapter-specific settings follow adapter.type
        other = next(t for t in ("lora", "loha", "lokr", "oft", "ia3", "full") if t not in spec.adapters)
        assert not visibility_updates(form, "sd15", other, "")[paths.index(spec.path)]["visible"]


def test_settings_follow_the_caption_strategy(form):
    """The instance prompt shows only with `instanceprompt`, the table columns with parquet / jsonl."""
    from studio.ui.forms import CONTEXT_PATHS

    paths = [s.path for s in form.specs]
    assert "data.caption_strategy" in [p for p, _ in CONTEXT_PATHS]

    def shown(strategy: str, path: str) -> bool:
        others = [strategy if p == "data.caption_strategy" else d for p, d in CONTEXT_PATHS[3:]]
        return visibility_updates(form, "sd15", "lora", "", *others)[paths.index(path)]["visible"]

    assert not shown("textfile", "data.instance_prompt") and shown("instanceprompt", "data.instance_prompt")
    assert shown("textfile", "data.caption_extension") and not shown("instanceprompt", "data.caption_extension")
    assert shown("parquet", "data.caption_column") and not shown("textfile", "data.caption_column")


def test_the_variant_is_picked_from_the_familys_variants(form):
    paths = [s.path for s in form.specs]
    variant = paths.index("model.variant")
    llm = visibility_updates(form, "causal_lm", "lora", "chat")[variant]
    assert [v for _, v in llm["choices"]] == ["", "sft", "pretrain"]
    assert llm["allow_custom_value"] is False and llm["value"] == ""  # not a causal LM variant: back to default
    music = visibility_updates(form, "acestep", "lora", "my-finetune")[variant]
    assert music["allow_custom_value"] is True and "value" not in music  # ACE-Step fine-tunes have own names
    assert "value" not in visibility_updates(form, "flux", "lora", "schnell")[variant]


def test_auto_on_off_setting_round_trips():
    from studio.ui.form_spec import from_ui, to_ui

    spec = spec_by_path()["memory.gradient_checkpointing"]
    assert spec.choices == ("auto", "on", "off") and spec.default == "auto"
    for value in ("auto", True, False):
        assert from_ui(spec, to_ui(spec, value)) == value


def browser_payload(component, value):
    """What the browser holds for `value` and sends back: the component's postprocessed value as JSON."""
    shown = component.postprocess(value)
    return shown.model_dump() if hasattr(shown, "model_dump") else shown


@pytest.mark.parametrize("name", PRESETS)
def test_packed_values_give_the_preset_back(name, form, home):
    config = preset_config(name)
    packed = json.dumps([browser_payload(c, v) for c, v in zip(form.components, values_from_config(config))])
    assert validate(config_from_values(unpack(form, packed))).model_dump(mode="json") == config


def test_tables_arrive_as_gradio_would_hand_them_over(form, home):
    """The prompt table goes through the Dataframe's own data model and preprocess (a pandas frame)."""
    config = preset_config("tiny-sd15-lora")
    config["sampling"]["prompts"] = [{"prompt": "a red circle", "seed": 3}]
    values = values_from_config(config)
    packed = json.dumps([browser_payload(c, v) for c, v in zip(form.components, values)])
    table = unpack(form, packed)[[s.path for s in form.specs].index("sampling.prompts")]
    assert list(table["prompt"]) == ["a red circle"] and int(table["seed"][0]) == 3


def test_a_stale_page_is_told_to_reload(form):
    with pytest.raises(ValueError, match="reload the page"):
        unpack(form, json.dumps([1, 2, 3]))


def test_no_server_event_takes_the_form_fields(home):
    """Every event of the studio's page that reads the Train form gets its packed box; the fields are
    inputs only of browser-side packing steps (no request, no loading status)."""
    from studio.queue import JobStore
    from studio.ui.app import build_app
    from studio.ui.context import StudioContext

    demo = build_app(StudioContext(store=JobStore(home / "queue.db")), {"share": False, "auth": None})
    server = [fn for fn in demo.fns.values() if fn.fn is not None]
    widest = max(server, key=lambda fn: len(fn.inputs))
    assert len(widest.inputs) < 20, (widest.name, len(widest.inputs))
    packing = [fn for fn in demo.fns.values() if fn.fn is None and len(fn.inputs) > 100]
    assert packing and all(fn.js for fn in packing)
    names = {fn.name for fn in server}
    assert {"run", "show_preview", "summary", "fit", "save"} <= names
