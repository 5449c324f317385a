"""The Queue tab: every job with a coloured status, actions on the selected job, the queue script."""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from studio.config import ConfigError
from studio.queue import Job, QueueError, queue_script
from studio.ui.context import StudioContext
from studio.ui.download_panel import build_download_panel
from studio.ui.tabs.compare_panel import build_compare_panel
from studio.ui.jobs import LastProgress, default_job_id, get_job, job_choices, picker_update, queue_frame, styled

EMPTY = "The queue is empty: configure a job in **Train** and press **Add to queue** (or *Start now*)."
# Which actions make sense in which status (FIELDS §20, §21.1: a running job cannot be removed).
ALLOWED = {
    "stop": ("pending", "running"),
    "resume": ("stopped", "interrupted", "failed"),
    "retry": ("completed", "stopped", "failed", "interrupted"),
    "remove": ("pending", "completed", "stopped", "failed", "interrupted"),
    "up": ("pending",),
    "down": ("pending",),
    "clone": ("pending", "running", "completed", "stopped", "failed", "interrupted"),
}


@dataclass
class QueueTab:
    job: gr.Dropdown
    clone_btn: gr.Button
    timer: gr.Timer
    refresh_outputs: list
    refresh: object  # (job_id, signature) -> updates for refresh_outputs
    row_picked: object  # the event of a click on a table row (it sets `job`)


def job_detail(job: Job | None) -> str:
    if job is None:
        return "No job selected."
    lines = [f"**#{job.id} {job.name}** · {job.kind} · **{job.status}** · launch `{job.launch}` · "
             f"attempt {job.attempts}"]
    if job.error:
        lines.append(f"```\n{job.error[-1500:]}\n```")
    return "\n\n".join(lines)


def _move(ctx: StudioContext, job: Job, delta: int) -> str:
    pending = [j.id for j in ctx.store.list(("pending",))]
    index = max(0, pending.index(job.id) + delta)
    ctx.store.move(job.id, index)
    return f"Moved #{job.id} to place {index + 1} of the pending jobs."


def run_action(ctx: StudioContext, action: str, job_id) -> str:
    job = get_job(ctx.store, job_id)
    if job is None:
        return "Select a job first."
    try:
        if action == "up":
            return _move(ctx, job, -1)
        if action == "down":
            return _move(ctx, job, +1)
        done = getattr(ctx.store, action)(job.id)
    except (QueueError, ConfigError) as err:
        return f"**Error:** {err}"
    verbs = {"stop": "stop requested (it saves a checkpoint, then exits)" if job.status == "running" else "stopped",
             "resume": "queued to resume from its newest checkpoint", "retry": "queued to run again from the start",
             "remove": "removed (its run folder stays on disk)"}
    return f"#{job.id} {job.name}: {verbs.get(action, action)}." if done is not None else ""


BUTTONS = (("stop", "Stop", "stop"), ("resume", "Resume", "secondary"), ("retry", "Retry", "secondary"),
           ("remove", "Remove", "stop"), ("up", "Move up", "secondary"), ("down", "Move down", "secondary"),
           ("clone", "Clone into form", "primary"))


def _sentence(line: str) -> str:
    return f"{line[:1].upper()}{line[1:]}." if line else ""


def queue_refresh(ctx: StudioContext, progress: LastProgress, job_id, last_signature: str) -> list:
    """Table (only when it changed), selection, the selected job's details and buttons, the script."""
    frame = queue_frame(ctx.store, progress)
    choices = job_choices(ctx.store)
    signature = frame.to_json() + repr(choices)
    picked = get_job(ctx.store, job_id)
    selected = picked or get_job(ctx.store, default_job_id(ctx.store))
    unchanged = signature == last_signature
    table = gr.skip() if unchanged else gr.update(value=styled(frame), visible=not frame.empty)
    picker = picker_update(choices, picked.id if picked else None, selected.id if selected else None,
                           not unchanged)
    states = [gr.update(interactive=selected is not None and selected.status in ALLOWED[a]) for a, _, _ in BUTTONS]
    script_text = queue_script(ctx.store)
    script_path = ctx.home / "queue_script.sh"
    if not script_path.exists() or script_path.read_text(encoding="utf-8") != script_text:
        script_path.write_text(script_text, encoding="utf-8")
    return [table, gr.update(visible=frame.empty),
            picker,
            selected.run_dir if selected else "", job_detail(selected),
            json.dumps(selected.config, indent=2) if selected else "", script_text, str(script_path),
            _sentence(ctx.worker_state()), signature, *states]


def save_setting(ctx: StudioContext, key: str, value) -> str:
    try:
        if key.endswith("_s"):
            value = float(value)
        elif key == "queue.cpu_jobs":
            value = int(value)
        elif key != "queue.gpus":
            value = bool(value)
        ctx.store.set_setting(key, value)
    except (ConfigError, TypeError, ValueError) as err:
        return f"**Error:** {key}: {err}"
    return f"Saved `{key}` = {value}."


def _queue_options() -> tuple[gr.Accordion, tuple[tuple[str, gr.components.Component], ...]]:
    with gr.Accordion("Queue options", open=False, elem_id="queue-options") as box:
        use_uv = gr.Checkbox(label="Use `uv run` in the queue script", elem_id="queue-use-uv",
                             info="Only changes the command prefix of the generated script; turn it off "
                                  "for a plain pip/virtualenv setup.")
        auto_resume = gr.Checkbox(label="Resume interrupted jobs automatically", elem_id="queue-auto-resume",
                                  info="Jobs cut short by a crash or a reboot continue from their checkpoint "
                                       "when the worker starts.")
        grace = gr.Number(label="Stop grace (seconds)", precision=0, elem_id="queue-stop-grace",
                          info="After Stop, how long a job may take to save and exit before it is ended.")
        pool = gr.Textbox(label="GPU pool", elem_id="queue-gpus", placeholder="empty: one job at a time",
                          info="GPUs the queue hands out: `auto` (every CUDA device) or numbers like `0,1,2,3`. "
                               "Jobs then run side by side, each on its own GPUs (as many as its processes); "
                               "a job never waits behind one queued after it. Empty: one job at a time.")
        cpu_jobs = gr.Number(label="CPU jobs at once", precision=0, minimum=1, elem_id="queue-cpu-jobs",
                             info="With a GPU pool: how many jobs that use no GPU run at the same time.")
    return box, (("queue.use_uv", use_uv), ("queue.auto_resume_interrupted", auto_resume),
                 ("queue.stop_grace_s", grace), ("queue.gpus", pool), ("queue.cpu_jobs", cpu_jobs))


def build_queue_tab(ctx: StudioContext) -> QueueTab:
    progress = LastProgress()
    worker_line = gr.Markdown(elem_id="queue-worker")
    table = gr.Dataframe(interactive=False, elem_id="queue-table", wrap=True, max_height=420,
                         label="Jobs (click a row to select it)")
    empty = gr.Markdown(EMPTY, visible=False, elem_id="queue-empty")
    with gr.Row():
        job = gr.Dropdown(label="Selected job", choices=[], elem_id="queue-job", scale=2, allow_custom_value=True)
        run_dir = gr.Textbox(label="Run folder", interactive=False, elem_id="queue-run-dir", scale=3,
                             buttons=["copy"])
    with gr.Row():
        buttons = {action: gr.Button(label, variant=variant, size="sm", interactive=False, elem_id=f"queue-{action}")
                   for action, label, variant in BUTTONS}
    message = gr.Markdown(elem_id="queue-message")
    detail = gr.Markdown(elem_id="queue-detail")
    build_download_panel(ctx, job, "queue")
    with gr.Accordion("Job config", open=False):
        config_view = gr.Code(language="json", interactive=False, max_lines=30)
    with gr.Accordion("Queue script: the pending jobs as shell commands", open=False):
        script = gr.Code(language="shell", interactive=False, max_lines=40, elem_id="queue-script")
        download = gr.DownloadButton("Download queue_script.sh", size="sm", elem_id="queue-script-download")
    build_compare_panel(ctx)
    options_box, settings = _queue_options()
    timer = gr.Timer(2.0, active=False)
    signature = gr.State("")

    def refresh(job_id, last_signature):
        return queue_refresh(ctx, progress, job_id, last_signature)

    outputs = [table, empty, job, run_dir, detail, config_view, script, download, worker_line, signature,
               *buttons.values()]
    again = dict(fn=refresh, inputs=[job, gr.State("")], outputs=outputs, show_progress="hidden")
    timer.tick(refresh, [job, signature], outputs, show_progress="hidden")
    job.input(**again)

    def pick_row(evt: gr.SelectData):
        row = evt.row_value or []
        return int(row[0]) if row else gr.skip()

    row_picked = table.select(pick_row, None, job)
    row_picked.then(refresh, [job, signature], outputs, show_progress="hidden")
    # One event for the action buttons and one for the options, each telling its trigger by the event's
    # target: the browser matches every component against every event at load (24 events before, 4 now).
    actions = {button.elem_id: action for action, button in buttons.items() if action != "clone"}  # clone: app.py

    def act(job_id, evt: gr.EventData):
        return run_action(ctx, actions[evt.target.elem_id], job_id)

    gr.on([buttons[a].click for a in actions.values()], act, [job], [message]).then(**again)
    keys = {comp.elem_id: (key, i) for i, (key, comp) in enumerate(settings)}

    def save(use_uv, auto_resume, grace, pool, cpu_jobs, evt: gr.EventData):  # _queue_options' order
        key, i = keys[evt.target.elem_id]
        return save_setting(ctx, key, (use_uv, auto_resume, grace, pool, cpu_jobs)[i])

    gr.on([comp.input for _, comp in settings], save, [comp for _, comp in settings], [message]).then(**again)

    def load_settings():
        return [ctx.store.get_setting(key) for key, _ in settings]

    options_box.expand(load_settings, None, [comp for _, comp in settings], show_progress="hidden")  # read when shown
    return QueueTab(job, buttons["clone"], timer, outputs, refresh, row_picked)
