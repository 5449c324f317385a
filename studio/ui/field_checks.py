"""Checks while the user edits the Train form: when a field loses focus or a choice changes, the
form is validated as "Add to queue" validates it (`train_actions.check_values`, a few ms) and the
problem of each field the user has touched is shown under that field; fields not touched yet stay
quiet until Preview or Add to queue shows everything.

One event for the whole form: the browser reports which field was left (its elem_id) through a
hidden trigger, instead of one listener per field (each listener would carry every field's id in
the page's config). Only fields whose message changed are sent back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from studio.ui import train_actions as act
from studio.ui.form_events import on_form
from studio.ui.forms import SchemaForm, error_updates, field_elem_id, nearest_path, quiet

# The browser side: any focus leaving a form field (text, number, slider, dropdown) or a change of a
# checkbox / choice notes the field's elem_id and, after the UI has its new value, presses the trigger.
WATCH_FIELDS = """() => {
  if (window.studioChecksWatched) return;
  window.studioChecksWatched = true;
  let timer = null;
  const report = (event) => {
    const block = event.target.closest && event.target.closest('[id^="cfg-"]');
    if (!block || block.id.startsWith('cfg-section-') || block.id.startsWith('cfg-advanced-')) return;
    window.studioTouched = block.id;
    clearTimeout(timer);
    timer = setTimeout(() => document.querySelector('#train-field-check')?.click(), 120);
  };
  document.addEventListener('focusout', report, true);
  document.addEventListener('change', report, true);
}"""
# Hands the touched field's elem_id to the check (the last input), the other inputs unchanged.
PASS_TOUCHED = "(...args) => [...args.slice(0, -1), window.studioTouched || '']"


@dataclass
class Shown:
    """What the form shows: the touched fields, every problem on screen, and whether all are shown."""

    touched: set[str] = field(default_factory=set)
    problems: dict[str, str] = field(default_factory=dict)
    everything: bool = False  # after Preview / Add to queue: every field's problem is on screen


def field_of(form: SchemaForm, elem_id: str) -> str | None:
    return next((s.path for s in form.specs if field_elem_id(s.path) == elem_id), None)


def check_edit(form: SchemaForm, shown: Shown, elem_id: str, values: list) -> tuple[list, Shown]:
    """Updates of the form's components (only those whose message changed) and the new `Shown`."""
    path = field_of(form, elem_id)
    touched = shown.touched | ({path} if path else set())
    problems = act.check_values(values).problems
    visible = {p: m for p, m in problems.items() if shown.everything or nearest_path(form, p) in touched}
    # The field just left is always redrawn: what is on screen may be newer than `shown` (an Add to
    # queue that answered while this check ran), and that field must end right.
    updates = error_updates(form, visible, before=shown.problems, always=(path,) if path else ())
    return updates, Shown(touched, visible, shown.everything)


def all_shown(problems: dict[str, str]) -> Shown:
    """After Preview or Add to queue: every problem is on screen (an empty dict: the form is clean)."""
    return Shown(set(), dict(problems), everything=bool(problems))


def wire_field_checks(form: SchemaForm) -> gr.State:
    """The hidden trigger and its one event; returns the state that Preview / Add to queue also set."""
    shown = gr.State(Shown())
    touched = gr.Textbox(visible=True, elem_classes=["studio-hidden"], container=False, show_label=False)
    trigger = gr.Button("check", elem_id="train-field-check", elem_classes=["studio-hidden"])

    def run(state: Shown, *values_and_id):
        *values, elem_id = values_and_id
        updates, new = check_edit(form, state, elem_id, list(values))
        return [*updates, new]

    on_form(trigger.click, run, [shown, form, touched], [*form.components, shown], js=PASS_TOUCHED,
            trigger_mode="always_last", **quiet(touched))
    return shown
