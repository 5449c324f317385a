"""The Playground tab: try a run's checkpoints or final adapter with your own prompt and seed, side by side.

Generate queues one `generate` job per chosen source (the queue's worker loads the model; this process
never does) and the results appear here from the run's `playground/<request>/<source>/` folders, each
with the exact settings, the diffusers / transformers code that reproduces it and, for image families,
a ComfyUI workflow."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.registry.families import FAMILIES
from studio.config import ConfigError
from studio.playground import (PLAYGROUND_DIR, adapter_sources, list_batches, playground_configs, read_batch,
                               source_order)
from studio.queue import QueueError
from studio.ui.context import StudioContext
from studio.ui.jobs import get_job

SLOTS = 4  # sources compared at once
TRIED = ("completed", "stopped", "failed", "interrupted", "running")
INTRO = ("Pick a run and one or more of its checkpoints (or the final adapter), write a prompt and generate: "
         "every source gets the **same seed and settings**, so the pictures differ only by the training. Each "
         "result shows what produced it and the code that makes it again outside the studio. Generation runs as "
         "a job in the queue (after the job that is running now).")


@dataclass
class PlaygroundTab:
    run: gr.Dropdown
    timer: gr.Timer
    refresh: object  # (run) -> the run picker with the runs there are now


def run_choices(ctx: StudioContext) -> list[tuple[str, int]]:
    """Training runs that have something to try (a checkpoint or the final adapter)."""
    out = []
    for job in reversed(ctx.store.list(TRIED)):
        if job.kind == "train" and adapter_sources(Path(job.run_dir)):
            out.append((f"#{job.id} {job.name} ({job.status})", job.id))
    return out


def family_of(job) -> str:
    return (job.config.get("model") or {}).get("family", "") if job else ""


def pick_run(ctx: StudioContext, run_id):
    """Sources of the run (two preselected: the first checkpoint and the newest), fields for its family
    (a language model has no negative prompt, steps or guidance; it has a reply length and temperature)."""
    job = get_job(ctx.store, run_id)
    sources = adapter_sources(Path(job.run_dir)) if job else []
    chosen = sources if len(sources) <= 2 else [sources[0], sources[-1]]
    family = family_of(job)
    kind = FAMILIES[family].data if family in FAMILIES else ""
    image, text = kind == "images", kind == "text"
    batches = list_batches(Path(job.run_dir)) if job else []
    return [gr.update(choices=sources, value=chosen), gr.update(visible=image), gr.update(visible=not text),
            gr.update(visible=not text), gr.update(visible=text), gr.update(visible=text),
            gr.update(label="Chat message" if text else "Prompt"),
            gr.update(choices=batches, value=batches[0] if batches else None)]


def queue_generate(ctx: StudioContext, run_id, sources, prompt, negative, seed, steps, guidance, max_new_tokens,
                   temperature):
    job = get_job(ctx.store, run_id)
    if job is None:
        return "**Error:** pick a run first (finished training runs with a checkpoint or an adapter).", gr.skip()
    if len(sources or []) > SLOTS:
        return f"**Error:** playground.sources: pick at most {SLOTS} to compare at once.", gr.skip()
    sampling = ({"max_new_tokens": int(max_new_tokens or 64), "temperature": float(temperature or 0)}
                if FAMILIES[family_of(job)].data == "text" else None)
    try:
        configs = playground_configs(job.config, list(sources or []), prompt or "", seed=int(seed or 0),
                                     steps=int(steps or 0), guidance=float(-1 if guidance is None else guidance),
                                     negative_prompt=negative or "", sampling=sampling)
        added = [ctx.store.add(cfg, kind="generate") for cfg in configs]
    except (ConfigError, QueueError, ValueError) as err:
        return f"**Error:** {err}", gr.skip()
    batch = Path(added[0].run_dir).parent.name
    ids = ", ".join(f"#{j.id}" for j in added)
    return (f"Queued {len(added)} generate job(s) ({ids}); the results appear below as each finishes.",
            gr.update(choices=sorted({*list_batches(Path(job.run_dir)), batch}, reverse=True), value=batch))


def result_view(ctx: StudioContext, entry: dict) -> dict:
    """What one result shows: a title line, then the picture / song / reply, the code and the workflow."""
    settings = entry.get("settings")
    if settings is None:
        state = f"**Error:** {entry['error']}" if entry.get("error") else entry.get("state") or "generating…"
        return {"title": f"**{entry['source']}** · {state}"}
    path = Path(entry["path"])
    kind = path.suffix.lower()
    served = ctx.can_serve(path)
    keys = ("seed", "steps", "guidance", "width", "height", "scheduler", "max_new_tokens", "temperature")
    line = " · ".join(f"{k} {settings[k]}" for k in keys if k in settings)
    text = path.read_text(encoding="utf-8", errors="replace") if kind == ".txt" else ""
    workflow = entry.get("workflow")
    return {"title": f"**{entry['source']}** (step {settings.get('step', '?')}) · “{settings.get('prompt', '')}” · {line}",
            "image": str(path) if kind == ".png" and served else None,
            "audio": str(path) if kind == ".wav" and served else None,
            "text": ("> " + text.replace("\n", "\n> ")) if text else ("*(empty reply)*" if kind == ".txt" else ""),
            "code": entry.get("code", ""), "workflow": workflow if workflow and ctx.can_serve(workflow) else None}


def playground_refresh(ctx: StudioContext, run_id, batch, last_signature: str) -> list:
    """[summary, the result views (or skip when unchanged), signature]."""
    job = get_job(ctx.store, run_id)
    entries = read_batch(Path(job.run_dir), batch) if job and batch else []
    if job and batch:  # jobs still waiting in the queue have no folder yet: show them as queued
        folder, seen = Path(job.run_dir) / PLAYGROUND_DIR / batch, {e["source"] for e in entries}
        entries += [{"source": Path(j.run_dir).name, "state": f"queued as job #{j.id}"}
                    for j in ctx.store.list(("pending",))
                    if j.kind == "generate" and Path(j.run_dir).parent == folder and Path(j.run_dir).name not in seen]
        entries.sort(key=lambda e: source_order(e["source"]))
    signature = repr([(e["source"], "settings" in e, e.get("error"), e.get("state")) for e in entries]) + \
        repr((run_id, batch))
    if signature == last_signature:
        return [gr.skip(), gr.skip(), signature]
    words = "" if entries else "No results yet for this run: generate above."
    return [words, [result_view(ctx, e) for e in entries], signature]


def show_results(views: list[dict]) -> None:
    """Lay out the results side by side (inside a gr.render: the number of results varies)."""
    with gr.Row(equal_height=False):
        for i, view in enumerate(views or []):
            with gr.Column(min_width=260):
                gr.Markdown(view["title"], elem_id=f"play-title-{i}")
                if view.get("image"):
                    gr.Image(view["image"], show_label=False, interactive=False, height=320, elem_id=f"play-image-{i}")
                if view.get("audio"):
                    gr.Audio(view["audio"], show_label=False, interactive=False, elem_id=f"play-audio-{i}")
                if view.get("text"):
                    gr.Markdown(view["text"], elem_id=f"play-text-{i}")
                if view.get("code"):
                    gr.Code(view["code"], language="python", interactive=False, max_lines=18,
                            label="Reproduce it (copy as code)", elem_id=f"play-code-{i}")
                if view.get("workflow"):
                    gr.File(view["workflow"], label="ComfyUI workflow (API format)", interactive=False,
                            elem_id=f"play-workflow-{i}")


def build_playground_tab(ctx: StudioContext) -> PlaygroundTab:
    gr.Markdown(INTRO, elem_classes=["studio-hint"])
    with gr.Row(equal_height=False):
        run = gr.Dropdown(label="Run", choices=[], elem_id="play-run", scale=2,
                          info="Training runs with a checkpoint or a final adapter.")
        sources = gr.CheckboxGroup(label="Adapters to compare", choices=[], elem_id="play-sources", scale=3,
                                   info=f"Each is generated with the same seed; up to {SLOTS}.")
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="play-prompt", placeholder="a red circle on a plain background")
    with gr.Row():
        negative = gr.Textbox(label="Negative prompt", elem_id="play-negative", scale=3,
                              info="What to steer away from.")
        seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, elem_id="play-seed",
                         info="Same seed, same noise: only the adapter differs.")
        steps = gr.Number(label="Steps", value=0, precision=0, minimum=0, elem_id="play-steps",
                          info="Inference steps; 0 = the run's sampling default.")
        guidance = gr.Number(label="Guidance", value=-1, minimum=-1, elem_id="play-guidance",
                             info="Guidance scale; -1 = the run's sampling default.")
        max_tokens = gr.Number(label="Max new tokens", value=64, precision=0, minimum=1, visible=False,
                               elem_id="play-max-tokens", info="Longest reply, in tokens.")
        temperature = gr.Number(label="Temperature", value=0.7, minimum=0, visible=False, elem_id="play-temperature",
                                info="0 = always the most likely token.")
    generate = gr.Button("Generate", variant="primary", elem_id="play-generate")
    message = gr.Markdown(elem_id="play-message")
    batch = gr.Dropdown(label="Results of request (newest first)", choices=[], elem_id="play-batch",
                        allow_custom_value=True)  # a request just queued has no folder (no choice) yet
    summary = gr.Markdown(elem_id="play-summary")
    views = gr.State([])
    gr.render(inputs=[views], triggers=[views.change])(show_results)  # not at page load: nothing to show yet
    timer = gr.Timer(2.0, active=False)
    signature = gr.State("")

    def refresh(run_id, batch_name, last):
        return playground_refresh(ctx, run_id, batch_name, last)

    outputs = [summary, views, signature]
    inputs = [run, batch, signature]
    run.change(lambda r: pick_run(ctx, r), [run],
               [sources, negative, steps, guidance, max_tokens, temperature, prompt, batch])
    batch.change(refresh, [run, batch, gr.State("")], outputs, show_progress="hidden")
    timer.tick(refresh, inputs, outputs, show_progress="hidden")
    generate.click(lambda *a: queue_generate(ctx, *a),
                   [run, sources, prompt, negative, seed, steps, guidance, max_tokens, temperature],
                   [message, batch])
    def offer_runs(current):
        choices = run_choices(ctx)
        ids = [c[1] for c in choices]
        return gr.update(choices=choices, value=current if current in ids else (ids[0] if ids else None))

    return PlaygroundTab(run, timer, offer_runs)
