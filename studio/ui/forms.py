"""Gradio components generated from the schema (see `form_spec.py`): one component per setting,
keyed by its dotted path, laid out section by section with the essentials open and the advanced
settings folded. A new setting in `studio/config/sections/` shows up here without UI code."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from studio.registry.families import FAMILIES
from studio.ui.form_spec import FieldSpec, field_specs, spec_by_path, to_ui

SECTION_TITLES = {
    "job": "Job", "model": "Model", "data": "Dataset", "adapter": "Adapter", "training": "Training",
    "optimizer": "Optimizer", "scheduler": "Learning-rate schedule", "loss": "Loss",
    "memory": "Precision & memory", "dataloader": "Data loading", "checkpointing": "Checkpoints & resume",
    "evaluation": "Evaluation", "logging": "Logging & TensorBoard", "sampling": "Samples during training",
    "distributed": "Multi-GPU", "hub": "Hugging Face Hub",
}
# The sections a first run needs; the others start folded (their essentials first when opened).
OPEN_SECTIONS = ("job", "model", "data", "adapter", "training")
# The settings that decide which others apply (FieldSpec.applies), with their fallbacks: the family,
# adapter and variant, then every setting named in a `when` hint.
CONTEXT_PATHS = (("model.family", "sd15"), ("adapter.type", "lora"), ("model.variant", ""), *(
    (path, str(spec_by_path()[path].default)) for path in sorted({p for s in field_specs() for p, _ in s.when})))


def _applies(spec: FieldSpec, context: tuple) -> bool:
    """`spec.applies` for a context in CONTEXT_PATHS order (the settings after the third: `when` values)."""
    return spec.applies(*context[:3], dict(zip([p for p, _ in CONTEXT_PATHS[3:]], context[3:])))


def variant_choices(family: str) -> dict[str, Any]:
    """The variant picker for a family: its registered variants ("" = the family's default); a typed
    name only where the family takes fine-tunes of other names (trait `custom_variants`)."""
    row = FAMILIES.get(family)
    variants = row.variants if row else ()
    return {"choices": [("default", ""), *((v, v) for v in variants)],
            "allow_custom_value": bool(row and "custom_variants" in row.traits)}
# The class of a form section: its small fields are laid out two per line (see app.py's CSS).
PAIRS = "studio-pairs"
_INFO_KINDS = ("choice", "multichoice", "bool", "tristate", "autobool", "int", "float", "text", "tags", "numlist")


def quiet(target: gr.components.Component) -> dict:
    """Options of an event that writes the form's fields: no progress shown, and its loading status kept on
    `target` alone. Gradio's front end keeps a status for every component an event ever showed progress
    on (by default all its outputs) and walks them all on each status update of any later event: with the
    ~220 form fields among them, every event on the page cost 0.4-0.7 s more in the browser. Events that
    show a result pass `show_progress_on=<their message>` for the same reason."""
    return {"show_progress": "hidden", "show_progress_on": target}


def field_elem_id(path: str, prefix: str = "cfg") -> str:
    return f"{prefix}-{path.replace('.', '-').replace('_', '-')}"


def help_text(spec: FieldSpec) -> str:
    hint = spec.range_hint()
    extra = " Leave empty for automatic." if spec.optional and spec.kind in ("int", "float") else ""
    return f"{spec.help}{extra}" + (f" ({hint})" if hint and not spec.slider else "")


def make_component(spec: FieldSpec, value: Any, prefix: str = "cfg", visible: bool = True,
                   family: str = "sd15") -> gr.components.Component:
    """The widget for one setting. Numbers carry no min/max: out-of-range input must reach the
    schema, which names the field, instead of failing inside Gradio before our check runs."""
    common = dict(label=spec.label, key=f"{prefix}:{spec.path}", elem_id=field_elem_id(spec.path, prefix),
                  visible=visible)
    info = dict(info=help_text(spec))
    value = to_ui(spec, value)
    if spec.widget == "variant":  # the family's variants; `visibility_updates` follows family switches.
        # Built taking any name (a preset of another family may load into it before the first switch);
        # each update sends the family's own choices and rule with a value that fits them.
        choices = variant_choices(family)["choices"]
        choices += [] if value in [v for _, v in choices] else [(value, value)]
        return gr.Dropdown(value=value, choices=choices, allow_custom_value=True, **common, **info)
    if spec.kind in ("choice", "tristate", "autobool"):
        return gr.Dropdown(choices=list(spec.choices), value=value, **common, **info)
    if spec.kind == "multichoice":
        return gr.Dropdown(choices=list(spec.choices), value=value, multiselect=True, **common, **info)
    if spec.kind == "tags":  # free words (module names...): typed, each becomes a chip
        return gr.Dropdown(choices=list(value), value=value, multiselect=True, allow_custom_value=True,
                           **common, **info)
    if spec.kind == "bool":
        return gr.Checkbox(value=bool(value), **common, **info)
    if spec.kind in ("int", "float") and spec.optional:  # Gradio's number box cannot be left empty
        return gr.Textbox(value=value, placeholder="automatic", **common, **info)
    if spec.kind in ("int", "float"):
        precision = 0 if spec.kind == "int" else None
        if spec.slider:
            step = spec.step or (1 if spec.kind == "int" else 0.01)
            return gr.Slider(minimum=spec.minimum, maximum=spec.maximum, step=step, value=value,
                             precision=precision, **common, **info)
        return gr.Number(value=value, precision=precision, step=spec.step or 1, **common, **info)
    if spec.kind == "table":
        return gr.Dataframe(value=value, headers=[c.path for c in spec.columns], interactive=True,
                            datatype=["number" if c.kind in ("int", "float") else "str" for c in spec.columns],
                            column_count=len(spec.columns), **common)
    if spec.kind == "json":
        return gr.Code(value=value, language="json", lines=4, max_lines=20, **common)
    placeholder = {"path": "a folder or file path"}.get(spec.widget or "", "")
    if spec.widget == "code":
        return gr.Code(value=value, lines=4, **common)
    return gr.Textbox(value=value, placeholder=placeholder, **common, **info)


@dataclass
class SchemaForm:
    """The generated form: components in `field_specs()` order, and each section's folding boxes."""

    specs: tuple[FieldSpec, ...]
    components: list[gr.components.Component]
    boxes: dict[str, list[Any]] = field(default_factory=dict)  # section -> [accordion, advanced accordion?]
    box_paths: list[tuple[Any, list[str]]] = field(default_factory=list)  # box -> the paths inside it
    packed: Any = None  # hidden box the values travel in to a server function (see form_events.py)

    def component(self, path: str) -> gr.components.Component:
        return self.components[[s.path for s in self.specs].index(path)]

    def has(self, path: str) -> bool:
        return any(s.path == path for s in self.specs)

    @property
    def box_list(self) -> list[Any]:
        return [box for box, _ in self.box_paths]


def build_form(values: dict[str, Any], sections: tuple[str, ...] | None = None, prefix: str = "cfg",
               open_sections: tuple[str, ...] = OPEN_SECTIONS, paths: tuple[str, ...] | None = None) -> SchemaForm:
    """Lay out the settings of `sections` (all by default; or exactly `paths`). `values`: path ->
    config value; the family, adapter type and variant in it decide which settings are shown."""
    specs = tuple(s for s in field_specs() if (sections is None or s.section in sections)
                  and (paths is None or s.path in paths))
    context = tuple(str(values.get(p, d)) for p, d in CONTEXT_PATHS)
    shown = {s.path: _applies(s, context) for s in specs}
    by_section: dict[str, list[FieldSpec]] = {}
    for spec in specs:
        by_section.setdefault(spec.section, []).append(spec)
    made: dict[str, gr.components.Component] = {}
    form = SchemaForm(specs, [])
    for section, members in by_section.items():
        essentials = [s for s in members if s.group != "advanced"]
        advanced = [s for s in members if s.group == "advanced"]
        title = SECTION_TITLES.get(section, section.replace("_", " ").capitalize())
        with gr.Accordion(title, open=section in open_sections and bool(essentials), elem_classes=[PAIRS],
                          elem_id=f"{prefix}-section-{section}", visible=any(shown[s.path] for s in members)) as box:
            _place(essentials, values, made, prefix, shown, context[0])
            if advanced:
                with gr.Accordion(f"More {title.lower()} settings" if essentials else "Settings", open=not essentials,
                                  elem_id=f"{prefix}-advanced-{section}", elem_classes=[PAIRS],
                                  visible=any(shown[s.path] for s in advanced)) as adv:
                    _place(advanced, values, made, prefix, shown, context[0])
                form.box_paths.append((adv, [s.path for s in advanced]))
        form.box_paths.append((box, [s.path for s in members]))
        form.boxes[section] = [box]
    form.components = [made[s.path] for s in specs]
    # Rendered (the browser keeps the value of a rendered component only); the CSS class hides it.
    form.packed = gr.Textbox(visible=True, elem_classes=["studio-hidden"], container=False, show_label=False)
    return form


def _place(specs: list[FieldSpec], values: dict, made: dict, prefix: str, shown: dict[str, bool],
           family: str) -> None:
    """Two columns of small widgets; wide ones (tables, JSON) on their own row. The small ones share the
    form Gradio puts around consecutive fields, a two-column grid (app.py's CSS for the sections' class
    `PAIRS`): a row per pair would add two layout nodes per pair (the row and its form), a third of the
    page's config, and the browser walks the whole tree at load and on every event. The grid also
    closes the gap a hidden field used to leave beside its partner."""
    small = [s for s in specs if s.kind not in ("table", "json")]
    wide = [s for s in specs if s.kind in ("table", "json")]
    for spec in small:  # Gradio groups them in one form: the section's PAIRS class makes it the grid
        made[spec.path] = make_component(spec, values.get(spec.path, spec.default), prefix, shown[spec.path],
                                         family)
    for spec in wide:
        made[spec.path] = make_component(spec, values.get(spec.path, spec.default), prefix, shown[spec.path])


# -- updates --------------------------------------------------------------------------------
def visibility_updates(form: SchemaForm, family: str, adapter_type: str, variant: str, *others: str) -> list[Any]:
    """gr.update(visible=...) for every component, then for every folding box (hidden when empty).
    `others`: the values of CONTEXT_PATHS after the third (the settings `when` hints depend on)."""
    context = (family, adapter_type, variant, *others)
    shown = {s.path: _applies(s, context) for s in form.specs}
    comps = [gr.update(visible=shown[s.path], **_variant_update(family, variant)) if s.widget == "variant"
             else gr.update(visible=shown[s.path]) for s in form.specs]
    boxes = [gr.update(visible=any(shown[p] for p in paths)) for _, paths in form.box_paths]
    return comps + boxes


def wire_visibility(form: SchemaForm, status: gr.components.Component) -> None:
    """Editing a setting that decides which others apply (family, adapter, variant, a `when` setting) shows
    and hides the form's fields and boxes: one event for all of them (each event weighs on the browser at
    load), its loading status kept on `status`."""
    present = [p for p, _ in CONTEXT_PATHS if form.has(p)]
    if not present:
        return

    def visibility(*values):
        given = dict(zip(present, values))
        return visibility_updates(form, *(str(given.get(p, d) or d) for p, d in CONTEXT_PATHS))

    deciders = [form.component(p) for p in present]
    gr.on([comp.input for comp in deciders], visibility, deciders, form.components + form.box_list, **quiet(status))


def context_of(config: dict) -> tuple[str, ...]:
    """The values of CONTEXT_PATHS in a config (their fallbacks where unset), for `visibility_updates`."""
    from studio.ui.form_spec import get_path

    return tuple(str(get_path(config, p, d) or d) for p, d in CONTEXT_PATHS)


def loaded_updates(form: SchemaForm, config: dict) -> list[Any]:
    """Every field set from `config` and shown or hidden as its family, adapter... say, then every
    folding box: one update per component, so a load is one request (no visibility pass after it)."""
    shown = visibility_updates(form, *context_of(config))
    fields = [{**value, **visible} for value, visible in zip(value_updates(form, config), shown)]
    return [*fields, *shown[len(fields):]]


def _variant_update(family: str, variant: str) -> dict[str, Any]:
    """The family's variants; a value the new family does not take goes back to its default."""
    picker = variant_choices(family)
    if not picker["allow_custom_value"] and variant not in [v for _, v in picker["choices"]]:
        picker["value"] = ""
    return picker


def nearest_path(form: SchemaForm, problem_path: str) -> str | None:
    """The form field a problem belongs to ("sampling.prompts.0.seed" -> "sampling.prompts")."""
    best = None
    for spec in form.specs:
        if problem_path == spec.path or problem_path.startswith(spec.path + "."):
            if best is None or len(spec.path) > len(best):
                best = spec.path
    return best


def _by_field(form: SchemaForm, problems: dict[str, str]) -> dict[str, list[str]]:
    by_field: dict[str, list[str]] = {}
    for path, message in problems.items():
        target = nearest_path(form, path)
        if target:
            suffix = "" if path == target else f" ({path[len(target) + 1:]})"
            by_field.setdefault(target, []).append(message + suffix)
    return by_field


def error_updates(form: SchemaForm, problems: dict[str, str], before: dict[str, str] | None = None,
                  always: tuple[str, ...] = ()) -> list[Any]:
    """Show each problem under its own field (red frame, message before the help text); clear the rest.
    With `before` (the problems on screen), fields whose messages stay the same are left alone, except
    the fields in `always`."""
    by_field = _by_field(form, problems)
    old = _by_field(form, before) if before is not None else None
    out = []
    for spec in form.specs:
        errors = by_field.get(spec.path)
        if old is not None and old.get(spec.path) == errors and spec.path not in always:
            out.append(gr.skip())
            continue
        classes = ["field-error"] if errors else []
        if spec.kind in _INFO_KINDS:
            info = f"⚠ {'; '.join(errors)}. — {help_text(spec)}" if errors else help_text(spec)
            out.append(gr.update(info=info, elem_classes=classes))
        else:
            label = f"{spec.label} — ⚠ {'; '.join(errors)}" if errors else spec.label
            out.append(gr.update(label=label, elem_classes=classes))
    return out


def value_updates(form: SchemaForm, config: dict) -> list[Any]:
    """Set every field from a full config dict (free-word lists also get their words as choices)."""
    from studio.ui.form_spec import get_path

    out = []
    family = str(get_path(config, "model.family", "sd15"))
    for spec in form.specs:
        value = to_ui(spec, get_path(config, spec.path, spec.default))
        if spec.widget == "variant":
            out.append(gr.update(**{"value": value, **_variant_update(family, value)}))
        else:
            out.append(gr.update(value=value, choices=value) if spec.kind == "tags" else gr.update(value=value))
    return out
