"""The Preprocess tab: pick the dataset and model, scan the files, queue the caching job, see the cache.

The dataset and model settings are generated from the schema like the Train form; every other
setting of the caching job (precision, device...) comes from the Train form, so the cache is built
exactly for the training that will read it."""
from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

from studio.config import ConfigError, validate
from studio.queue import QueueError
from studio.ui import train_actions as act
from studio.ui.context import StudioContext
from studio.ui.dataset_view import SCAN_COLUMNS, cache_state, scan_dataset
from studio.ui.form_events import on_form
from studio.ui.form_spec import config_from_values, field_specs, from_ui, get_path, set_path
from studio.ui.forms import build_form, error_updates, loaded_updates, wire_visibility
from studio.ui.tabs.dataset_upload import build_upload_panel, connect_panel, preview
from studio.ui.tabs.train import TrainTab

SECTIONS = ("model", "data")
# On each opening: the tab is (to be) built (the hidden box turns true) and, with an empty dataset path,
# "Copy from the Train tab" is pressed: Preprocess follows the Train tab. On the first opening the content
# is still being built: wait for it (up to 15 s).
OPEN_AND_FOLLOW = """() => {
  let tries = 0;
  const follow = () => {
    const box = document.querySelector('#pre-data-path input, #pre-data-path textarea');
    const copy = document.querySelector('#pre-copy');
    if (!box || !copy) { if (tries++ < 150) setTimeout(follow, 100); return; }
    if (!box.value) copy.click();
  };
  follow();
  return true;
}"""


def _merged_config(train_values: list, own_specs, own_values: list) -> dict:
    """The Train form's config with this tab's model and data settings on top."""
    config = config_from_values(list(train_values))
    problems = []
    for spec, value in zip(own_specs, own_values):
        try:
            set_path(config, spec.path, from_ui(spec, value))
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
    return config


def _job_name(config: dict) -> str:
    stem = Path(str(get_path(config, "data.path", "") or "data").replace("demo:", "demo-")).name
    return "cache-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "data")


def build_preprocess_tab(ctx: StudioContext, train: TrainTab, tab: gr.Tab) -> None:
    """The tab's content is built the first time `tab` is opened, in the browser that opens it: a
    hidden box turns true on the first select and its change renders the content, once (later selects
    set the same value: no change). The first page leaves out this tab's hundred components and their
    events, which the browser would otherwise set up before showing anything."""
    opened = gr.Checkbox(False, visible=False, elem_id="pre-opened")
    tab.select(None, None, [opened], js=OPEN_AND_FOLLOW)

    @gr.render(triggers=[opened.change])
    def lay_out():
        _lay_out(ctx, train)


def _lay_out(ctx: StudioContext, train: TrainTab) -> None:
    gr.Markdown("Scan a dataset for unusable files before training, and build its cache (latents and text "
                "embeddings) as a queued job, so training starts straight away. Settings not shown here "
                "(precision, device…) are taken from the Train tab.", elem_classes=["studio-hint"])
    with gr.Row():
        copy_btn = gr.Button("⇦ Copy the dataset and model from the Train tab", variant="secondary",
                             elem_id="pre-copy", scale=0, min_width=320)
    panel = build_upload_panel()
    initial = {s.path: s.default for s in field_specs()}
    form = build_form(initial, sections=SECTIONS, prefix="pre", open_sections=SECTIONS)
    with gr.Row():
        scan_btn = gr.Button("Scan dataset", variant="primary", elem_id="pre-scan")
        queue_btn = gr.Button("Queue caching job", variant="primary", elem_id="pre-queue")
        state_btn = gr.Button("Show cache state", elem_id="pre-state")
    message = gr.Markdown(elem_id="pre-message")
    bad_files = gr.Dataframe(headers=SCAN_COLUMNS, interactive=False, wrap=True, elem_id="pre-bad-files",
                             label="Files with problems", visible=False)
    state = gr.Markdown(elem_id="pre-cache-state")
    wire_visibility(form, message)
    _connect(ctx, train, form, copy_btn, scan_btn, queue_btn, state_btn, message, bad_files, state, panel)


def _connect(ctx: StudioContext, train: TrainTab, form, copy_btn, scan_btn, queue_btn, state_btn, message,
             bad_files, state, panel) -> None:
    train_comps = train.form.components

    def copy_from_train(*train_values):
        try:
            config = config_from_values(list(train_values))
        except ConfigError as err:
            return [gr.skip()] * (len(form.components) + len(form.box_list)) + [act.problems_markdown(err.by_field)]
        return [*loaded_updates(form, config), "Copied the dataset and model settings from the Train tab."]

    on_form(copy_btn.click, copy_from_train, [train.form], form.components + form.box_list + [message],
            show_progress_on=message)

    def checked(values: tuple):
        train_values, own = values[:len(train_comps)], values[len(train_comps):]
        try:
            return validate(_merged_config(train_values, form.specs, own)), {}
        except ConfigError as err:
            return None, {k: v for k, v in err.by_field.items() if k.split(".")[0] in SECTIONS} or err.by_field

    def scan(*values):
        cfg, problems = checked(values)
        if cfg is not None and not cfg.data.path.strip() and not cfg.data.datasets:
            cfg, problems = None, {"data.path": "empty: type the dataset folder, upload one above, or copy the "
                                                "Train tab's"}
        if cfg is None:
            return [act.problems_markdown(problems), gr.update(visible=False), *error_updates(form, problems),
                    gr.update(visible=False), []]
        result = scan_dataset(cfg)
        found = {row[0]: row[1] for row in result.rows}
        gallery, shown = preview(cfg.data.path, found, cfg.data.caption_extension)
        return [result.message, gr.update(value=result.frame(), visible=bool(result.rows)),
                *error_updates(form, {}), gallery, shown]

    def queue(*values):
        cfg, problems = checked(values)
        if cfg is None:
            return [act.problems_markdown(problems), *error_updates(form, problems)]
        config = cfg.model_dump(mode="json")
        config["job"].update(name="", output_dir="")
        try:
            job = ctx.store.add(config, kind="preprocess", name=_job_name(config))
        except (ConfigError, QueueError) as err:
            return [act.error_message(err), *error_updates(form, getattr(err, "by_field", {}))]
        return [f"Caching job **#{job.id} {job.name}** queued; follow it in Queue and Monitor.",
                *error_updates(form, {})]

    def show_state(*values):
        cfg, problems = checked(values)
        return act.problems_markdown(problems) if cfg is None else cache_state(ctx.store, cfg)

    inputs = [train.form, form]
    scan_outputs = [message, bad_files, *form.components, panel.gallery, panel.shown]
    on_form(scan_btn.click, scan, inputs, scan_outputs, show_progress_on=message)
    connect_panel(ctx, panel, form.component("data.path"), scan, inputs, scan_outputs, [bad_files, message])
    on_form(queue_btn.click, queue, inputs, [message, *form.components], show_progress_on=message)
    on_form(state_btn.click, show_state, inputs, [state])

