"""The Train tab's "run on each machine" block: with `distributed.num_machines` > 1, the exact command
for every machine, built by `studio.distributed.machine_commands` (the lines the CLI prints when the
job starts), updated as the settings change."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from studio.config import ConfigError, finalize_job, validate
from studio.distributed import machine_commands
from studio.runfolder import CONFIG_FILE
from studio.ui.form_spec import config_from_values, get_path
from studio.ui.form_events import on_form
from studio.ui.forms import SchemaForm

# The settings the commands depend on; any change to them redraws the block.
WATCHED = ("distributed.num_machines", "distributed.num_processes", "distributed.machine_rank",
           "distributed.main_process_ip", "distributed.main_process_port")


def machines_markdown(values: list) -> str:
    """"" for one machine; else the command per machine, or what to fix before there is one."""
    try:
        data = config_from_values(list(values))
    except ConfigError:
        return ""
    machines = get_path(data, "distributed.num_machines", 1)
    if not isinstance(machines, int) or machines <= 1:
        return ""
    try:
        cfg = finalize_job(validate(data))
    except ConfigError as err:
        fix = [f"`{path}`: {message}" for path, message in err.by_field.items()]
        return "**Run on each machine**: the commands appear once the config is valid:\n\n" + "\n".join(
            f"- {line}" for line in fix[:6])
    config_path = Path(cfg.job.output_dir) / CONFIG_FILE
    lines = [f"# machine {rank}{' (main, ' + cfg.distributed.main_process_ip + ')' if rank == 0 else ''}\n{line}"
             for rank, line in enumerate(machine_commands(cfg, config_path))]
    return (f"**Run on each machine** ({cfg.distributed.num_machines} machines x "
            f"{cfg.distributed.num_processes} processes). Queue the job on machine 0, then copy its "
            f"`{CONFIG_FILE}` to the same path on the others (same data and model paths):\n\n"
            "```bash\n" + "\n".join(lines) + "\n```")


def build_machine_commands(form: SchemaForm) -> gr.Markdown:
    """The block (hidden for one machine), redrawn whenever a watched setting changes."""
    block = gr.Markdown(elem_id="train-machines", visible=False)

    def redraw(*values):
        text = machines_markdown(list(values))
        return gr.update(value=text, visible=bool(text))

    # One event for the five settings: a preset load changes them all at once, one redraw (not five).
    triggers = [form.component(path).change for path in WATCHED if form.has(path)]
    if triggers:
        on_form(partial(gr.on, triggers), redraw, [form], block, trigger_mode="always_last",
                show_progress="hidden")
    return block
