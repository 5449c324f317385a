"""The Train tab's config files: import a config JSON from this browser into the form, export the form's
config as a JSON file (the same file `python -m studio train CONFIG.json` runs)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr

from studio.config import ConfigError, load_config
from studio.ui import train_actions as act
from studio.ui.files import EXPORTS_DIR
from studio.ui.form_events import on_form

MAX_CONFIG_BYTES = 1_000_000


def build_config_files() -> tuple:
    with gr.Accordion("Import / export a config JSON", open=False, elem_id="train-config-files"):
        with gr.Row():
            upload = gr.UploadButton("Import config JSON", file_types=[".json"], size="sm", elem_id="train-import")
            export = gr.Button("Export config JSON", size="sm", elem_id="train-export")
        file = gr.File(label="Exported config", visible=False, interactive=False, elem_id="train-export-file")
    return upload, export, file


def read_config_file(path: str) -> dict:
    """The validated config of an uploaded file; ConfigError names the file and the bad settings."""
    name = Path(path).name
    if Path(path).stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError([("config file", f"{name}: larger than 1 MB; a config is a small JSON file")])
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError([("config file", f"{name}: not valid JSON ({err})")]) from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "versions" in data:
        data = data["config"]  # a run's training_args.json: the config inside it
    if not isinstance(data, dict):
        raise ConfigError([("config file", f"{name}: a config is a JSON object of sections")])
    return load_config(data).model_dump(mode="json")


def wire_config_files(ctx, tab, upload, export, file) -> None:
    def do_import(uploaded):
        path = getattr(uploaded, "name", uploaded)
        try:
            config = read_config_file(path)
        except (ConfigError, OSError) as err:
            problems = err.by_field if isinstance(err, ConfigError) else {"config file": str(err)}
            return [gr.skip()] * len(tab.load_outputs) + [act.problems_markdown(problems)]
        config["job"] = {**config.get("job", {}), "name": "", "output_dir": ""}
        return [*tab.load_updates(config, None), f"Imported **{Path(path).name}** into the form."]

    def do_export(*values):
        checked = act.check_values(values)
        if not checked.ok:
            return gr.update(visible=False), act.problems_markdown(checked.problems)
        config = checked.config.model_dump(mode="json")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", config["job"]["name"] or config["model"]["family"]) or "config"
        out = ctx.home / EXPORTS_DIR / f"{stem}.config.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return gr.update(value=str(out), visible=True), f"Exported the form's config to `{out}`."

    upload.upload(do_import, [upload], tab.load_outputs + [tab.message], show_progress_on=tab.message)
    on_form(export.click, do_export, [tab.form], [file, tab.message])
