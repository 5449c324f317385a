"""Events that read a whole generated form, with the form's values sent as one input.

Why: Gradio's front end gives every input component of an event a loading status when the event's
first answer arrives (gradio 6.31, `Blocks-*.js`: `r.inputs.forEach(e => update_state_cb(e,
{loading_status: ...}))`), and keeps it. With the ~220 fields of the Train form as inputs, one field
check or Preview left every later tab switch about 0.1 s slower in the browser (measured with Chrome's
performance metrics: ~200 ms of main-thread time per switch on a fresh page, ~330 ms after one field
check). So an event on the form runs in two steps:

1. in the browser only (no request, no status): the form's values, as Gradio would send them, are
   packed into one hidden text box as JSON;
2. the server function gets that text box instead of the fields; `unpack` runs each field's own
   validation and `preprocess`, as Gradio does for an input, so the function sees the same values.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from studio.ui.forms import SchemaForm


def unpack(form: SchemaForm, text: str) -> list[Any]:
    """The values the form's components would have given a server function, from their packed JSON."""
    payloads = json.loads(text) if text else []
    if len(payloads) != len(form.components):
        raise ValueError(f"the form sent {len(payloads)} values for {len(form.components)} fields; reload the page")
    values = []
    for component, payload in zip(form.components, payloads):
        model = getattr(component, "data_model", None)
        if model is not None and payload is not None:  # as gradio.blocks.Blocks.preprocess_data does
            payload = model.model_validate(payload, context={"validate_meta": True})
        values.append(component.preprocess(payload))
    return values


def on_form(trigger: Callable, fn: Callable, inputs: list, outputs: Any = None, **kwargs) -> Any:
    """`trigger(fn, inputs, outputs, **kwargs)`, where `inputs` names a `SchemaForm` (one or more) in
    place of its components: `fn` still gets one argument per field. `trigger` is an event listener
    (`button.click`, `dependency.then`) or `functools.partial(gr.on, triggers)`. Returns the server
    step, for `.then`."""
    forms = [item for item in inputs if isinstance(item, SchemaForm)]
    sizes = [len(f.components) for f in forms]
    pack = ("(...v) => { const sizes = %s; let at = 0; "
            "return sizes.map((n) => JSON.stringify(v.slice(at, at += n))); }" % json.dumps(sizes))
    mode = {"trigger_mode": kwargs["trigger_mode"]} if "trigger_mode" in kwargs else {}
    packing = trigger(None, [c for f in forms for c in f.components], [f.packed for f in forms], js=pack,
                      show_progress="hidden", queue=False, **mode)
    sent = [item.packed if isinstance(item, SchemaForm) else item for item in inputs]

    def call(*args):
        spread = []
        for item, arg in zip(inputs, args):
            spread += unpack(item, arg) if isinstance(item, SchemaForm) else [arg]
        return fn(*spread)

    call.__name__ = getattr(fn, "__name__", "form_event")  # the API name Gradio derives from it
    return packing.then(call, sent, outputs, **kwargs)
