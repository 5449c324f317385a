"""The Samples tab: what the run rendered, per step and prompt, each with what produced it.

Images go to a gallery, songs to audio players, LLM completions to text. Picking one prompt shows it
across every step (the way to see a style arrive, or over-fitting set in)."""
from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from studio.ui.context import StudioContext
from studio.ui.jobs import default_job_id, get_job, job_choices, picker_update

AUDIO_SLOTS = 8
ALL = "all"
KIND_BY_SUFFIX = {".png": "image", ".jpg": "image", ".jpeg": "image", ".webp": "image", ".wav": "audio",
                  ".flac": "audio", ".mp3": "audio", ".txt": "text"}
META_ORDER = ["step", "prompt", "seed", "steps", "guidance", "width", "height", "scheduler", "negative_prompt"]


@dataclass
class SamplesTab:
    job: gr.Dropdown
    timer: gr.Timer
    refresh: object  # (job, step, prompt, signature) -> updates of `outputs`
    inputs: list
    outputs: list


def caption(meta: dict) -> str:
    parts = [f"step {meta.get('step', '?')}", f"“{meta.get('prompt', '')}”", f"seed {meta.get('seed', '?')}"]
    if meta.get("steps") is not None:
        parts.append(f"{meta['steps']} steps")
    if meta.get("guidance") is not None:
        parts.append(f"guidance {meta['guidance']}")
    return " · ".join(parts)


def _read_wav(path: Path):
    with wave.open(str(path), "rb") as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return wav.getframerate(), frames.reshape(-1, wav.getnchannels())


def select(samples: list[dict], step: str, prompt: str) -> list[dict]:
    return [m for m in samples if (step == ALL or str(m.get("step")) == step)
            and (prompt == ALL or m.get("prompt") == prompt)]


def meta_frame(samples: list[dict]) -> pd.DataFrame:
    keys = [k for k in META_ORDER if any(k in m for m in samples)]
    keys += sorted({k for m in samples for k in m} - set(keys) - {"path", "file", "kind"})
    return pd.DataFrame([[m.get(k, "") for k in keys] + [m.get("file", "")] for m in samples],
                        columns=keys + ["file"])


def image_value(ctx: StudioContext, m: dict):
    path = Path(m["path"])
    if ctx.can_serve(path):
        return str(path), caption(m)
    with Image.open(path) as img:  # outside the served folders: hand over the pixels instead
        return img.copy(), caption(m)


def audio_update(ctx: StudioContext, m: dict | None):
    if m is None:
        return gr.update(visible=False, value=None)
    path = Path(m["path"])
    value = str(path) if ctx.can_serve(path) else _read_wav(path)
    return gr.update(visible=True, value=value, label=caption(m))


def _read_samples(ctx: StudioContext, job_id) -> tuple[int | None, list[dict]]:
    if job_id not in [c[1] for c in job_choices(ctx.store)]:
        job_id = default_job_id(ctx.store)
    selected = get_job(ctx.store, job_id)
    from studio.sampling import list_samples  # imports torch: only once samples are looked at

    samples = list_samples(Path(selected.run_dir)) if selected else []
    for m in samples:
        m["kind"] = KIND_BY_SUFFIX.get(Path(m["path"]).suffix.lower(), "other")
    return job_id, samples


def samples_refresh(ctx: StudioContext, job_id, step_value, prompt_value, last_signature: str) -> list:
    """Updates for SamplesTab.outputs; nothing is resent while the samples and filters are unchanged."""
    picked = job_id
    job_id, samples = _read_samples(ctx, job_id)
    steps = [ALL] + sorted({str(m.get("step")) for m in samples}, key=lambda s: int(s) if s.isdigit() else 0)
    prompts = [ALL] + sorted({str(m.get("prompt", "")) for m in samples})
    step_value = step_value if step_value in steps else ALL
    prompt_value = prompt_value if prompt_value in prompts else ALL
    shown = select(samples, step_value, prompt_value)
    signature = repr((job_id, step_value, prompt_value, [(m["path"], m.get("step")) for m in samples]))
    if signature == last_signature:
        return [gr.skip()] * (AUDIO_SLOTS + 8) + [signature]
    images = [image_value(ctx, m) for m in shown if m["kind"] == "image"]
    audio = [m for m in shown if m["kind"] == "audio"][:AUDIO_SLOTS]
    text = [m for m in shown if m["kind"] == "text"]
    text_md = "\n\n".join(f"**{caption(m)}**\n\n> " + (Path(m["path"]).read_text(encoding="utf-8", errors="replace")
                                                      or "*(empty completion: the model stopped at once)*")
                          .replace("\n", "\n> ") for m in text)
    if not samples:
        words = "No samples yet: they appear here when the run renders its sample prompts."
    else:
        words = f"{len(shown)} of {len(samples)} sample(s)" + (
            f" · “{prompt_value}” across steps" if prompt_value != ALL and step_value == ALL else "")
    return [picker_update(job_choices(ctx.store), picked, job_id, True), gr.update(choices=steps, value=step_value),
            gr.update(choices=prompts, value=prompt_value), words,
            gr.update(value=images, visible=bool(images)), gr.update(visible=bool(audio)),
            *[audio_update(ctx, audio[i] if i < len(audio) else None) for i in range(AUDIO_SLOTS)],
            gr.update(value=text_md, visible=bool(text)), gr.update(value=meta_frame(shown), visible=bool(shown)),
            signature]


def build_samples_tab(ctx: StudioContext) -> SamplesTab:
    with gr.Row(equal_height=False):
        job = gr.Dropdown(label="Job", choices=[], elem_id="samples-job", scale=3, allow_custom_value=True)
        step = gr.Dropdown(label="Step", choices=[ALL], value=ALL, elem_id="samples-step", scale=1)
        prompt = gr.Dropdown(label="Prompt (pick one to compare it across steps)", choices=[ALL], value=ALL,
                             elem_id="samples-prompt", scale=3)
        refresh_btn = gr.Button("Refresh", size="sm", scale=1)
    summary = gr.Markdown(elem_id="samples-summary")
    gallery = gr.Gallery(label="Images", columns=6, height=320, object_fit="contain", elem_id="samples-gallery",
                         visible=False, interactive=False, fit_columns=False)
    with gr.Row(visible=False) as audio_row:
        players = [gr.Audio(visible=False, interactive=False, elem_id=f"samples-audio-{i}") for i in range(AUDIO_SLOTS)]
    texts = gr.Markdown(visible=False, elem_id="samples-text")
    with gr.Accordion("What produced each sample", open=True):
        meta = gr.Dataframe(interactive=False, elem_id="samples-meta", wrap=True, visible=False)
    timer = gr.Timer(5.0, active=False)
    signature = gr.State("")

    def refresh(job_id, step_value, prompt_value, last_signature):
        return samples_refresh(ctx, job_id, step_value, prompt_value, last_signature)

    outputs = [job, step, prompt, summary, gallery, audio_row, *players, texts, meta, signature]
    inputs = [job, step, prompt, signature]
    timer.tick(refresh, inputs, outputs, show_progress="hidden")
    # The user's picks; a job set from elsewhere (the Queue tab, the refresh's own fallback) is read by the
    # next refresh (the tab's own when it is opened), not by a second one chained on `change`.
    gr.on([comp.input for comp in (job, step, prompt)], refresh, [job, step, prompt, gr.State("")], outputs,
          show_progress="hidden")
    refresh_btn.click(refresh, [job, step, prompt, gr.State("")], outputs)
    return SamplesTab(job, timer, refresh, inputs, outputs)
