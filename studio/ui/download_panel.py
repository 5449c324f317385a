"""The download panel of the Queue and Monitor tabs: one click prepares the selected job's files
(adapter, ComfyUI/kohya file, merged model and run folder as zips) as download links."""
from __future__ import annotations

import gradio as gr

from studio.ui.files import run_downloads
from studio.ui.jobs import get_job


def prepare_downloads(ctx, job_id):
    job = get_job(ctx.store, job_id)
    if job is None:
        return gr.update(value=None, visible=False), "Select a job first."
    paths, words = run_downloads(ctx, job.run_dir)
    return gr.update(value=paths or None, visible=bool(paths)), words


def build_download_panel(ctx, job: gr.Dropdown, prefix: str) -> None:
    with gr.Accordion("Download the adapter, the ComfyUI file or the whole run", open=False,
                      elem_id=f"{prefix}-downloads"):
        button = gr.Button("Prepare downloads", size="sm", elem_id=f"{prefix}-prepare-downloads")
        words = gr.Markdown(elem_id=f"{prefix}-downloads-message")
        files = gr.File(label="Files", file_count="multiple", interactive=False, visible=False,
                        elem_id=f"{prefix}-files")
    button.click(lambda j: prepare_downloads(ctx, j), [job], [files, words])
