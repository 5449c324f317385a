"""The Queue tab's "runs side by side": overlay the loss curves of chosen runs, and build a sweep (one
preset, a grid of learning rate x rank x steps) whose jobs are then overlaid together."""
from __future__ import annotations

import gradio as gr

from studio.config import ConfigError
from studio.queue import QueueError
from studio.ui import train_actions as act
from studio.ui.compare import SWEEP_AXES, overlay_frame, parse_axis, sweep_configs
from studio.ui.jobs import get_job, job_choices
from studio.ui.step_plot import STEP_AXIS, StepPlot, plot_update


def overlay(ctx, job_ids) -> tuple:
    jobs = [j for j in (get_job(ctx.store, i) for i in (job_ids or [])) if j is not None]
    frame = overlay_frame(jobs)
    if not jobs:
        return gr.update(value=None), "Pick two or more runs to compare their loss curves."
    missing = [f"#{j.id}" for j in jobs if not (frame["run"] == f"#{j.id} {j.name}").any()]
    note = f" ({', '.join(missing)}: no logged loss yet)" if missing else ""
    return plot_update(frame, "run"), f"{len(jobs)} run(s) on one chart{note}."


def queue_sweep(ctx, preset: str, prefix: str, *axis_texts) -> tuple:
    try:
        if not preset:
            raise ConfigError([("sweep.preset", "pick the preset the sweep starts from")])
        grid = {path: parse_axis(path, text) for path, text in zip(SWEEP_AXES, axis_texts)}
        configs = sweep_configs(act.preset_config(preset), grid, (prefix or "sweep").strip())
        added = [ctx.store.add(config, kind="train", name=name) for name, config in configs]
    except (ConfigError, QueueError) as err:
        return f"**Error:** {err}", gr.skip()
    names = ", ".join(f"#{j.id} {j.name}" for j in added)
    return (f"Queued {len(added)} job(s): {names}. They are overlaid below as they run.",
            gr.update(choices=job_choices(ctx.store), value=[j.id for j in added]))


def build_compare_panel(ctx) -> None:
    with gr.Accordion("Sweep: one preset, a grid of jobs", open=False, elem_id="sweep"):
        with gr.Row():
            preset = gr.Dropdown(label="Preset", choices=act.preset_choices(), elem_id="sweep-preset",
                                 info="The config every job of the sweep starts from.")
            prefix = gr.Textbox(label="Name prefix", value="sweep", elem_id="sweep-prefix",
                                info="Jobs are named <prefix>-lr…-r…-s….")
        with gr.Row():
            axes = [gr.Textbox(label=label, elem_id=f"sweep-{path.split('.')[1].replace('_', '-')}", info=info)
                    for path, label, info in (
                        ("training.learning_rate", "Learning rates", "Comma-separated, e.g. 1e-4, 5e-4."),
                        ("adapter.rank", "Ranks", "Comma-separated, e.g. 4, 16."),
                        ("training.max_steps", "Steps", "Comma-separated; empty keeps the preset's."))]
        go = gr.Button("Queue the sweep", variant="primary", elem_id="sweep-go")
        message = gr.Markdown(elem_id="sweep-message")
    with gr.Accordion("Compare runs: loss curves side by side", open=False, elem_id="compare"):
        with gr.Row(equal_height=False):
            runs = gr.Dropdown(label="Runs", choices=[], multiselect=True, elem_id="compare-runs", scale=4,
                               info="Training loss per run; eval loss as its own series where the run has one.")
            redraw = gr.Button("Redraw", size="sm", elem_id="compare-redraw", scale=0, min_width=100)
        words = gr.Markdown(elem_id="compare-message")
        plot = StepPlot(y="loss", color="run", title="Loss by run", height=300, elem_id="compare-plot", **STEP_AXIS)
    runs.focus(lambda: gr.update(choices=job_choices(ctx.store)), None, [runs], show_progress="hidden")
    runs.change(lambda ids: overlay(ctx, ids), [runs], [plot, words], show_progress="hidden")
    redraw.click(lambda ids: overlay(ctx, ids), [runs], [plot, words], show_progress="hidden")
    go.click(lambda *a: queue_sweep(ctx, *a), [preset, prefix, *axes], [message, runs])
