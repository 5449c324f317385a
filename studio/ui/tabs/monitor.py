"""The Monitor tab: progress, live loss / learning-rate plots and the console of the selected job,
fed by a timer that reads only what the trainer appended; TensorBoard on the job's event files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.queue import Job, QueueError
from studio.runfolder.control import request
from studio.runfolder.layout import TENSORBOARD_DIR
from studio.ui.context import StudioContext
from studio.ui.download_panel import build_download_panel
from studio.ui.jobs import default_job_id, get_job, job_choices, picker_update
from studio.ui.live import (LOSS_COLORS, RunFeed, charts_due, console_text, loss_frame, lr_frame,
                            progress_html, read_new_console, read_new_progress)
from studio.ui.step_plot import STEP_AXIS, StepPlot, plot_update
from studio.ui.tensorboard import delete_event_files, event_files


# Browser side, after each tick: keep the console scrolled to its newest line, unless the user
# scrolled up to read (then leave it where it is until they scroll back to the bottom).
FOLLOW_CONSOLE = """() => {
  const box = document.querySelector('#monitor-console textarea');
  if (!box) return;
  if (!box.dataset.watched) {
    box.dataset.watched = '1'; box.dataset.pinned = '1';
    box.addEventListener('scroll', () => {
      box.dataset.pinned = box.scrollTop + box.clientHeight >= box.scrollHeight - 24 ? '1' : '';
    });
  }
  if (box.dataset.pinned) box.scrollTop = box.scrollHeight;
}"""


@dataclass
class MonitorTab:
    job: gr.Dropdown
    timer: gr.Timer
    tick: object  # (job_id, feed, everything) -> updates of `outputs`
    outputs: list
    inputs: list


def log_dir_of(job: Job) -> Path:
    configured = ((job.config.get("logging") or {}).get("log_dir") or "").strip()
    return Path(configured).expanduser() if configured else Path(job.run_dir) / TENSORBOARD_DIR


def tensorboard_status(ctx: StudioContext, job: Job | None) -> str:
    if job is None:
        return "Select a job."
    log_dir = log_dir_of(job)
    running = ctx.tensorboard.running(log_dir)
    files = len(event_files(log_dir))
    where = f"`{log_dir}` ({files} event file{'s' if files != 1 else ''})"
    if running is None:
        return f"TensorBoard is not running for {where}."
    return (f"TensorBoard is running for {where}: **[{running.url}]({running.url})** (local to the machine that "
            "runs the studio; it is not exposed through the share link).")


def control_request(ctx: StudioContext, job_id, what: str) -> str:
    job = get_job(ctx.store, job_id)
    if job is None or job.status not in ("running", "pending") or (what != "STOP" and job.status != "running"):
        return "Only a running job can be asked to save or sample, and only a pending or running one to stop."
    if what == "STOP":
        try:
            ctx.store.stop(job.id)
        except QueueError as err:
            return f"**Error:** {err}"
        return f"Stop requested for #{job.id}: it saves a checkpoint and exits."
    request(Path(job.run_dir), what)
    return {"SAVE": "A checkpoint will be written after the current step.",
            "SAMPLE": "Samples will be rendered after the current step (see the Samples tab)."}[what]


def monitor_tick(ctx: StudioContext, job_id, feed: RunFeed, everything: bool = False) -> list:
    """One timer tick: the job list when it changed, then whatever the run appended since the last tick."""
    choices = job_choices(ctx.store)
    signature = repr(choices)
    picked = job_id
    if job_id not in [c[1] for c in choices]:
        job_id = default_job_id(ctx.store)
    choice_update = picker_update(choices, picked, job_id, signature != feed.choices_signature)
    job = get_job(ctx.store, job_id)
    if job is None:
        return [choice_update, "<div class='studio-status'>No job yet: add one in the Train tab.</div>",
                gr.skip(), gr.skip(), gr.skip(), "", RunFeed(choices_signature=signature), *button_states(None)]
    fresh = feed.job_id != job.id or feed.run_dir != job.run_dir
    if fresh:  # another job, or a new page: read its files from the start
        feed = feed.reset(job.id, job.run_dir)
    feed.choices_signature = signature
    read_new_progress(feed)
    new_console = read_new_console(feed) or fresh
    plots = ([plot_update(loss_frame(feed), "series"), plot_update(lr_frame(feed))] if charts_due(feed, fresh)
             else [gr.skip(), gr.skip()])
    text = console_text(feed, everything) if new_console else gr.skip()
    recent = "\n".join(f"- {e}" for e in reversed(feed.events[-12:])) or "*No events yet.*"
    return [choice_update, progress_html(feed, job.status), *plots, text, "**Events**\n\n" + recent, feed,
            *button_states(job)]


def button_states(job: Job | None) -> list:
    """Stop / Save / Sample only where they can act: Stop on a pending or running job, the others while it runs."""
    status = job.status if job else ""
    return [gr.update(interactive=status in ("pending", "running")), gr.update(interactive=status == "running"),
            gr.update(interactive=status == "running")]


def launch_tensorboard(ctx: StudioContext, job_id) -> str:
    job = get_job(ctx.store, job_id)
    if job is None:
        return "Select a job."
    try:
        ctx.tensorboard.launch(log_dir_of(job), console=ctx.home / "tensorboard.log")
    except (RuntimeError, OSError) as err:
        return f"**Error:** {err}"
    return tensorboard_status(ctx, job)


def stop_tensorboard(ctx: StudioContext, job_id) -> str:
    job = get_job(ctx.store, job_id)
    if job is not None:
        ctx.tensorboard.stop(log_dir_of(job))
    return tensorboard_status(ctx, job)


def delete_events(ctx: StudioContext, job_id) -> str:
    job = get_job(ctx.store, job_id)
    if job is None:
        return "Select a job."
    if job.status == "running":
        return "**Error:** The job is running and still writes its event files: stop it first."
    ctx.tensorboard.stop(log_dir_of(job))
    count = delete_event_files(log_dir_of(job))
    return f"Deleted {count} event file(s). " + tensorboard_status(ctx, job)


def _tensorboard_panel(ctx: StudioContext, job: gr.Dropdown) -> gr.Markdown:
    with gr.Accordion("TensorBoard", open=False, elem_id="monitor-tensorboard") as box:
        status = gr.Markdown(elem_id="monitor-tb-status")
        with gr.Row():
            launch = gr.Button("Launch TensorBoard", size="sm", variant="primary", elem_id="monitor-tb-launch")
            stop = gr.Button("Stop TensorBoard", size="sm", elem_id="monitor-tb-stop")
            delete = gr.Button("Delete this job's event files", size="sm", variant="stop",
                               elem_id="monitor-tb-delete")
        with gr.Row(visible=False) as confirm:
            gr.Markdown("Delete every TensorBoard event file of this job? This cannot be undone.")
            yes = gr.Button("Yes, delete", size="sm", variant="stop", elem_id="monitor-tb-delete-yes")
            no = gr.Button("Cancel", size="sm")
    launch.click(lambda j: launch_tensorboard(ctx, j), [job], [status])
    stop.click(lambda j: stop_tensorboard(ctx, j), [job], [status])
    delete.click(lambda: gr.update(visible=True), None, confirm)
    no.click(lambda: gr.update(visible=False), None, confirm)
    yes.click(lambda j: (delete_events(ctx, j), gr.update(visible=False)), [job], [status, confirm])
    box.expand(lambda j: tensorboard_status(ctx, get_job(ctx.store, j)), [job], [status], show_progress="hidden")
    return status


def build_monitor_tab(ctx: StudioContext) -> MonitorTab:
    with gr.Row(equal_height=False):
        job = gr.Dropdown(label="Job", choices=[], elem_id="monitor-job", scale=3, allow_custom_value=True)
        with gr.Column(scale=2, min_width=300):
            with gr.Row():
                stop_btn = gr.Button("Stop", variant="stop", size="sm", elem_id="monitor-stop", interactive=False)
                save_btn = gr.Button("Save checkpoint now", size="sm", elem_id="monitor-save", interactive=False)
                sample_btn = gr.Button("Sample now", size="sm", elem_id="monitor-sample", interactive=False)
    status = gr.HTML(elem_id="monitor-progress")
    message = gr.Markdown(elem_id="monitor-message")
    with gr.Row():
        loss_plot = StepPlot(y="loss", color="series", title="Loss", elem_id="monitor-loss", height=260,
                             color_map=LOSS_COLORS, **STEP_AXIS)
        lr_plot = StepPlot(y="learning rate", title="Learning rate", elem_id="monitor-lr", height=260, **STEP_AXIS)
    with gr.Row(equal_height=False):
        console = gr.Textbox(label="Console (tail of console.log)", lines=14, max_lines=14, autoscroll=True,
                             interactive=False, elem_id="monitor-console", scale=3,
                             placeholder="Waiting for the job to start…")
        with gr.Column(scale=1):
            everything = gr.Checkbox(label="Show library messages", value=False, elem_id="monitor-everything",
                                     info="The console shows the studio's own lines and errors; this adds what "
                                          "the libraries print (all of it is in console.log).")
            events = gr.Markdown(elem_id="monitor-events", label="Events")
    build_download_panel(ctx, job, "monitor")
    tb_status = _tensorboard_panel(ctx, job)
    timer = gr.Timer(1.5, active=False)
    feed = gr.State(RunFeed())

    def tick(job_id, feed: RunFeed, show_all: bool):
        return monitor_tick(ctx, job_id, feed, show_all)

    outputs = [job, status, loss_plot, lr_plot, console, events, feed, stop_btn, save_btn, sample_btn]
    inputs = [job, feed, everything]
    timer.tick(tick, inputs, outputs, show_progress="hidden").then(None, js=FOLLOW_CONSOLE)
    everything.change(lambda f, e: console_text(f, e), [feed, everything], [console], show_progress="hidden")
    # A pick by the user; a job set from elsewhere (the Queue tab, the tick's own fallback) is read by the
    # next tick (the tab's refresh when it is opened): one tick, not a second one chained on `change`.
    job.input(tick, inputs, outputs, show_progress="hidden").then(
        lambda j: tensorboard_status(ctx, get_job(ctx.store, j)), [job], [tb_status])
    for button, what in ((stop_btn, "STOP"), (save_btn, "SAVE"), (sample_btn, "SAMPLE")):
        button.click(lambda j, w=what: control_request(ctx, j, w), [job], [message])
    return MonitorTab(job, timer, tick, outputs, inputs)
