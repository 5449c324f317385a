"""The Train tab: the schema-generated form, presets, the live summary, preview and queueing."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from studio.config import ConfigError
from studio.queue import QueueError
from studio.ui import train_actions as act
from studio.ui.context import StudioContext
from studio.ui.field_checks import all_shown, wire_field_checks
from studio.ui.machine_commands import build_machine_commands
from studio.config.vram_fit import GPU_SIZES_GB
from studio.ui.estimates import ESTIMATE_PATHS, VRAM_PATHS, estimate, fit_to_gpu, summary_markdown
from studio.ui.form_events import on_form
from studio.ui.form_spec import config_from_values, default_values, field_specs, get_path, same_ui_value
from studio.ui.forms import SchemaForm, build_form, error_updates, loaded_updates, quiet, wire_visibility
from studio.ui.tabs.config_files import build_config_files, wire_config_files


@dataclass
class TrainTab:
    form: SchemaForm
    preset: gr.Dropdown
    base: gr.State  # the full config of the preset the form was loaded from (for "edits vs preset")
    family: gr.State  # the family the form's defaults follow
    summary: gr.Markdown
    message: gr.Markdown
    started: object = None  # the "Start now" event: app.py chains the switch to Monitor onto it

    @property
    def load_outputs(self) -> list:
        return [*self.form.components, *self.form.box_list, self.base, self.family, self.summary]

    def load_updates(self, config: dict, base: dict | None) -> list:
        """The form set from `config` (fields shown as it says), its preset, family and summary."""
        family = get_path(config, "model.family", "sd15")
        return [*loaded_updates(self.form, config), base, family, summary_markdown(estimate(config), config)]


def build_train_tab(ctx: StudioContext) -> TrainTab:
    preset_name = act.default_preset()
    base = act.preset_config(preset_name) if preset_name else {}
    initial = {s.path: get_path(base, s.path, s.default) for s in field_specs()}
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown("Settings are grouped by topic; the essentials are open, the rest is folded under "
                        "*More … settings*. Settings that do not apply to the chosen model family, adapter "
                        "or variant are hidden.", elem_classes=["studio-hint"])
            with gr.Accordion("Config preview: the exact JSON that will run", open=False,
                              elem_id="train-preview-box") as preview_box:
                preview = gr.Code(language="json", lines=12, max_lines=40, interactive=False,
                                  elem_id="train-preview")
            form = build_form(initial)
        with gr.Column(scale=1, min_width=340, elem_id="train-side"):
            preset = gr.Dropdown(choices=act.preset_choices(), value=preset_name, label="Preset",
                                 elem_id="train-preset", info="A starting point; load it into the form.")
            preset_info = gr.Markdown(act.preset_description(preset_name), elem_id="train-preset-info")
            with gr.Row():
                load_btn = gr.Button("Load preset", size="sm", variant="primary", elem_id="train-load")
                revert_btn = gr.Button("Revert to preset defaults", size="sm", variant="stop", elem_id="train-revert")
            with gr.Row(visible=False, elem_id="train-revert-confirm") as confirm_row:
                gr.Markdown("**Discard every edit** and reload the preset's values?")
                confirm_yes = gr.Button("Yes, revert", size="sm", variant="stop", elem_id="train-revert-yes")
                confirm_no = gr.Button("Cancel", size="sm", elem_id="train-revert-no")
            with gr.Accordion("Save as / delete preset", open=False):
                save_name = gr.Textbox(label="New preset name", placeholder="my-style-lora", elem_id="train-save-name")
                save_desc = gr.Textbox(label="Description", placeholder="what it is for")
                with gr.Row():
                    save_btn = gr.Button("Save as", size="sm", elem_id="train-save")
                    delete_btn = gr.Button("Delete this custom preset", size="sm", variant="stop",
                                           interactive=act.preset_kind(preset_name) == "user", elem_id="train-delete")
            config_files = build_config_files()
            temporary = gr.Checkbox(True, label="Temporary edits", elem_id="train-temporary",
                                    info="Edits go with the job only; the preset file is not changed. Untick "
                                         "to write them into the selected custom preset when queueing.")
            gr.Markdown("### This job")
            summary = gr.Markdown(summary_markdown(estimate(base), base), elem_id="train-summary")
            build_machine_commands(form)  # several machines: the command for each
            with gr.Row(equal_height=True):
                gpu_pick = gr.Dropdown(choices=[f"{g} GB" for g in GPU_SIZES_GB], value=None, label="My GPU has",
                                       elem_id="train-gpu-pick", scale=2,
                                       info="Pick your card's memory (VRAM) and fit the settings to it, from "
                                            "the memory estimate.")
                fit_btn = gr.Button("Fit to this GPU", size="sm", elem_id="train-gpu-fit", scale=1)
            with gr.Row():
                preview_btn = gr.Button("Preview config", size="sm", elem_id="train-preview-btn")
                add_btn = gr.Button("Add to queue", variant="primary", size="sm", elem_id="train-add")
                start_btn = gr.Button("Start now", variant="primary", size="sm", elem_id="train-start")
            message = gr.Markdown(elem_id="train-message")
    tab = TrainTab(form, preset, gr.State(base), gr.State(initial.get("model.family", "sd15")), summary, message)
    _wire_presets(tab, preset_info, load_btn, revert_btn, confirm_row, confirm_yes, confirm_no,
                  save_name, save_desc, save_btn, delete_btn)
    wire_config_files(ctx, tab, *config_files)
    _wire_live(tab)
    shown = wire_field_checks(form)
    _wire_gpu_fit(tab, gpu_pick, fit_btn)
    _wire_queueing(ctx, tab, preview, preview_box, preview_btn, add_btn, start_btn, temporary, shown)
    return tab


def _wire_presets(tab: TrainTab, preset_info, load_btn, revert_btn, confirm_row, confirm_yes, confirm_no,
                  save_name, save_desc, save_btn, delete_btn) -> None:
    """Wire the preset controls, and the visibility rules when the family, adapter... are edited."""
    form = tab.form

    def load(name):
        """Load and Revert (confirmed): the preset into the form; the revert question goes away."""
        hide = gr.update(visible=False)
        if not name:
            return [gr.skip()] * len(tab.load_outputs) + ["Choose a preset first.", hide]
        try:
            config = act.preset_config(name)
        except ConfigError as err:
            return [gr.skip()] * len(tab.load_outputs) + [act.problems_markdown(err.by_field), hide]
        return [*tab.load_updates(config, config), f"Loaded preset **{name}**.", hide]

    gr.on([load_btn.click, confirm_yes.click], load, [tab.preset], tab.load_outputs + [tab.message, confirm_row],
          show_progress_on=tab.message)
    wire_visibility(form, tab.message)
    revert_btn.click(lambda: gr.update(visible=True), None, confirm_row)
    confirm_no.click(lambda: gr.update(visible=False), None, confirm_row)
    tab.preset.change(lambda n: (act.preset_description(n), gr.update(interactive=act.preset_kind(n) == "user")),
                      [tab.preset], [preset_info, delete_btn])

    def save(name, description, *values):
        try:
            message = act.save_preset(name, description, list(values))
        except ConfigError as err:
            return gr.skip(), act.problems_markdown(err.by_field), gr.skip()
        base = act.preset_config(name.strip())
        return gr.update(choices=act.preset_choices(), value=name.strip()), message, base

    on_form(save_btn.click, save, [save_name, save_desc, form], [tab.preset, tab.message, tab.base])

    def delete(name):
        try:
            message = act.delete_preset(name)
        except ConfigError as err:
            return gr.skip(), act.problems_markdown(err.by_field)
        return gr.update(choices=act.preset_choices(), value=act.default_preset()), message

    delete_btn.click(delete, [tab.preset], [tab.preset, tab.message])


def _wire_live(tab: TrainTab) -> None:
    """Summary refresh while typing, and family switches that carry the family's own defaults."""
    form = tab.form

    def summary(*values):
        try:
            config = config_from_values(list(values))
        except ConfigError:
            return gr.skip()
        return summary_markdown(estimate(config), config)

    # One event for every setting the estimate reads (36 of them): the browser matches each component
    # against each event at load, and one event per setting also let two edits refresh at once. A family
    # switch refreshes it below, after its defaults are in.
    triggers = [form.component(path).input for path in dict.fromkeys(ESTIMATE_PATHS + VRAM_PATHS)
                if form.has(path) and path != "model.family"]
    if triggers:
        on_form(partial(gr.on, triggers), summary, [form], tab.summary, trigger_mode="always_last",
                show_progress="hidden")

    def follow_family(old_family, *values):
        """Settings still at the old family's default take the new family's default (e.g. resolution);
        the summary follows the form as it is then."""
        new_family = values[[s.path for s in form.specs].index("model.family")]
        old, new = default_values(old_family), default_values(new_family)
        out: list[Any] = []
        now = list(values)
        for i, (spec, value) in enumerate(zip(form.specs, values)):
            changed = not same_ui_value(old[spec.path], new[spec.path])
            follows = changed and same_ui_value(value, old[spec.path])
            out.append(gr.update(value=new[spec.path]) if follows else gr.skip())
            now[i] = new[spec.path] if follows else value
        return [*out, new_family, summary(*now)]

    if form.has("model.family"):
        on_form(form.component("model.family").input, follow_family, [tab.family, form],
                [*form.components, tab.family, tab.summary], **quiet(tab.summary))


def _wire_gpu_fit(tab: TrainTab, gpu_pick, fit_btn) -> None:
    """The VRAM picker (issue #19): the chosen card's size and the settings that fit it go into the form."""
    def fit(gpu, base, *values):
        if not gpu:
            return [gr.skip()] * len(tab.load_outputs) + ["Pick your GPU's memory first."]
        try:
            config = config_from_values(list(values))
        except ConfigError as err:
            return [gr.skip()] * len(tab.load_outputs) + [act.problems_markdown(err.by_field)]
        fitted, message = fit_to_gpu(config, float(str(gpu).split()[0]))
        if fitted is None:
            return [gr.skip()] * len(tab.load_outputs) + [message]
        return [*tab.load_updates(fitted, base), message]

    on_form(fit_btn.click, fit, [gpu_pick, tab.base, tab.form], tab.load_outputs + [tab.message],
            show_progress_on=tab.message)


def _wire_queueing(ctx: StudioContext, tab: TrainTab, preview, preview_box, preview_btn, add_btn, start_btn,
                   temporary, shown) -> None:
    form = tab.form

    def show_preview(base, *values):
        checked = act.check_values(values)
        text = act.preview_json(checked)
        parts = [act.problems_markdown(checked.problems) or "The config is valid.", act.notes_markdown(checked.notes)]
        edits = act.edited_paths(base, checked.config.model_dump(mode="json")) if checked.config else []
        if edits:
            parts.append(f"{len(edits)} edit(s) vs the preset: " + ", ".join(f"`{p}`" for p in edits))
        return [text, gr.update(open=True), "\n\n".join(p for p in parts if p),
                *error_updates(form, checked.problems), all_shown(checked.problems)]

    on_form(preview_btn.click, show_preview, [tab.base, form],
            [preview, preview_box, tab.message, *form.components, shown], show_progress_on=tab.message)

    def queue(start_now, preset_name, keep_temporary, base, *values):
        checked = act.check_values(values)
        if not checked.ok:
            return [act.problems_markdown(checked.problems), gr.skip(), *error_updates(form, checked.problems),
                    all_shown(checked.problems)]
        new_base = gr.skip()
        try:
            message = act.add_to_queue(ctx.store, checked, start_now=start_now)
            if not keep_temporary:
                note = act.keep_edits_in_preset(preset_name, checked)
                message += note
                new_base = act.preset_config(preset_name) if "updated" in note else new_base
        except (ConfigError, QueueError) as err:
            problems = err.by_field if isinstance(err, ConfigError) else {}
            return [act.error_message(err), gr.skip(), *error_updates(form, problems), all_shown(problems)]
        edits = act.edited_paths(base, checked.config.model_dump(mode="json"))
        if edits and keep_temporary:
            message += f"\n\nWith {len(edits)} temporary edit(s): " + ", ".join(f"`{p}`" for p in edits[:12])
        if checked.notes:
            message += "\n\n" + act.notes_markdown(checked.notes)
        state = ctx.worker_state()
        if "this app" not in state:
            message += f"\n\nNote: {state}."
        return [message, new_base, *error_updates(form, {}), all_shown({})]

    inputs = [tab.preset, temporary, tab.base, form]
    outputs = [tab.message, tab.base, *form.components, shown]
    on_form(add_btn.click, lambda *a: queue(False, *a), inputs, outputs, show_progress_on=tab.message)
    tab.started = on_form(start_btn.click, lambda *a: queue(True, *a), inputs, outputs, show_progress_on=tab.message)
