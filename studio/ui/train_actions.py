"""What the Train tab's buttons do, without any layout: check the form, preview the exact config,
queue it, and manage presets (load, save as, delete custom ones). Pure functions of the form values,
so tests call them directly."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from studio.config import ConfigError, JobConfig, finalize_job, validate
from studio.config.presets import (delete_user_preset, list_presets, load_preset_data, save_user_preset)
from studio.queue import JobStore, QueueError
from studio.ui.form_spec import (config_from_values, field_specs, get_path, same_ui_value, set_path,
                                 spec_by_path, to_ui)


@dataclass
class Checked:
    config: JobConfig | None
    problems: dict[str, str] = field(default_factory=dict)  # field path -> message
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.problems


def _preflight_problems(cfg: JobConfig) -> list[tuple[str, str]]:
    """Missing inputs (dataset, model) are reported before queueing, like the CLI does."""
    try:
        from studio.config.preflight import preflight_problems
    except ImportError:  # older tree without the file-system checks
        return []
    return preflight_problems(cfg)


def _all_problems(data: dict, first: ConfigError) -> dict[str, str]:
    """Type and range errors stop pydantic before the cross-field rules run; put the schema default
    in each bad field and validate again, so the user sees every problem at once."""
    problems = dict(first.by_field)
    specs = spec_by_path()
    for _ in range(3):
        for path in problems:
            spec = next((specs[p] for p in specs if path == p or path.startswith(p + ".")), None)
            if spec is not None:
                set_path(data, spec.path, spec.default)
        try:
            validate(data)
            break
        except ConfigError as err:
            new = {k: v for k, v in err.by_field.items() if k not in problems}
            if not new:
                break
            problems.update(new)
    return problems


def check_values(values: list, *, preflight: bool = True) -> Checked:
    """Every problem of the form at once: schema errors, cross-field rules, then missing inputs."""
    try:
        data = config_from_values(list(values))
    except ConfigError as err:  # unreadable JSON fields
        return Checked(None, err.by_field)
    try:
        cfg = validate(data)
        checked, probe = Checked(cfg, {}, list(cfg.notes)), cfg
    except ConfigError as err:
        checked = Checked(None, _all_problems(data, err))  # `data` now holds defaults where it was bad
        try:
            probe = validate(data)
        except ConfigError:
            probe = None
    if preflight and probe is not None:
        for path, message in ConfigError(_preflight_problems(probe)).by_field.items():
            checked.problems.setdefault(path, message)
    return checked


def problems_markdown(problems: dict[str, str]) -> str:
    if not problems:
        return ""
    lines = [f"**{len(problems)} setting(s) to fix** (marked in red in the form):"]
    lines += [f"- `{path}`: {message}" for path, message in problems.items()]
    return "\n".join(lines)


def notes_markdown(notes: list[str]) -> str:
    return "\n".join(f"- Note: {note}" for note in notes)


def preview_json(checked: Checked) -> str:
    """The config exactly as the queue will store it (the name is final unless it is taken)."""
    if checked.config is None:
        return ""
    return json.dumps(finalize_job(checked.config).model_dump(mode="json"), indent=2)


def edited_paths(base: dict | None, config: dict) -> list[str]:
    """Settings whose value differs from the preset the form was loaded from."""
    if not base:
        return []
    return [s.path for s in field_specs() if s.path not in ("job.name", "job.output_dir")
            and not same_ui_value(to_ui(s, get_path(base, s.path, s.default)),
                                  to_ui(s, get_path(config, s.path, s.default)))]


def add_to_queue(store: JobStore, checked: Checked, *, start_now: bool) -> str:
    """Queue the checked config; `start_now` moves it to the front. Returns the message to show."""
    job = store.add(checked.config, kind="train")
    message = f"Job **#{job.id} {job.name}** queued. Run folder: `{job.run_dir}`"
    if start_now:
        store.move(job.id, 0)
        running = store.list(("running",))
        message += (f"\n\nIt starts as soon as **#{running[0].id} {running[0].name}** ends (stop that one in "
                    "the Queue tab to start at once)." if running else "\n\nIt starts now.")
    return message


# -- presets -----------------------------------------------------------------------------------
def preset_choices() -> list[tuple[str, str]]:
    return [(f"{p['name']}" + (" (custom)" if p["kind"] == "user" else ""), p["name"]) for p in list_presets()]


def preset_kind(name: str | None) -> str | None:
    return next((p["kind"] for p in list_presets() if p["name"] == name), None)


def preset_description(name: str | None) -> str:
    preset = next((p for p in list_presets() if p["name"] == name), None)
    if preset is None:
        return ""
    kind = "system preset (read-only)" if preset["kind"] == "system" else "custom preset"
    return f"*{kind}*: {preset['description'] or 'no description'}"


def preset_config(name: str) -> dict:
    """The full config a preset stands for (defaults filled in)."""
    return validate(load_preset_data(name)).model_dump(mode="json")


DEMO_PRESET = "tiny-sd15-lora"  # the README's first run: offline, under a minute on a CPU


def default_preset() -> str | None:
    """The preset a fresh form shows: the offline demo when there is one."""
    names = [p["name"] for p in list_presets() if p["kind"] == "system"]
    if DEMO_PRESET in names:
        return DEMO_PRESET
    tiny = [n for n in names if n.startswith("tiny")]
    return (tiny or names or [None])[0]


def template_config(config: JobConfig | dict) -> dict:
    """A config as a preset keeps it: no job identity (each job gets its own name and run folder)."""
    data = config.model_dump(mode="json") if isinstance(config, JobConfig) else json.loads(json.dumps(config))
    data.setdefault("job", {}).update(name="", output_dir="")
    return data


def save_preset(name: str, description: str, values: list) -> str:
    checked = check_values(values, preflight=False)
    if checked.config is None:
        raise ConfigError(list(checked.problems.items()))
    save_user_preset(name.strip(), template_config(checked.config), description.strip())
    return f"Saved as custom preset **{name.strip()}**."


def delete_preset(name: str) -> str:
    delete_user_preset(name)
    return f"Custom preset **{name}** deleted."


def keep_edits_in_preset(name: str | None, checked: Checked) -> str:
    """Non-temporary edits: write the form into the selected custom preset (system presets are read-only)."""
    if not name or preset_kind(name) != "user":
        return "" if not name else (f"\n\nThe system preset **{name}** is read-only; use *Save as* to keep "
                                    "these settings.")
    save_user_preset(name, template_config(checked.config), _description_of(name))
    return f"\n\nCustom preset **{name}** updated with these settings."


def _description_of(name: str) -> str:
    return next((p["description"] for p in list_presets() if p["name"] == name), "")


def error_message(err: Exception) -> str:
    if isinstance(err, ConfigError):
        return problems_markdown(err.by_field)
    if isinstance(err, QueueError):
        return f"**Error:** {err}"
    raise err
