"""The Preprocess tab's dataset panel: upload files or a zip into STUDIO_HOME/datasets/<name>, see the
images in a grid with their captions and the scan's findings, and edit a caption in place."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.ui.files import (UPLOAD_SUFFIXES, UploadError, dataset_images, read_caption, save_upload,
                             write_caption)
from studio.ui.form_events import on_form


@dataclass
class UploadPanel:
    name: gr.Textbox
    files: gr.File
    upload: gr.Button
    message: gr.Markdown
    gallery: gr.Gallery
    shown: gr.State  # the image paths of the grid, in order
    caption: gr.Textbox
    image: gr.State  # the picked image
    save: gr.Button


def build_upload_panel() -> UploadPanel:
    with gr.Accordion("Upload a dataset (files or a zip) from this browser", open=False, elem_id="pre-upload"):
        gr.Markdown("Images with their `.txt` captions (or songs, chat JSONL), loose or in one zip. They are "
                    "saved under `STUDIO_HOME/datasets/<name>` (nothing there is replaced) and the dataset path "
                    "below is set to that folder.", elem_classes=["studio-hint"])
        with gr.Row(equal_height=False):
            name = gr.Textbox(label="Dataset name", elem_id="pre-upload-name", scale=1,
                              info="Names the folder: letters, digits, '.', '_' or '-'.")
            files = gr.File(label="Files or a .zip", file_count="multiple", elem_id="pre-upload-files", scale=3,
                            file_types=[*UPLOAD_SUFFIXES, ".zip"])
        upload = gr.Button("Upload into STUDIO_HOME/datasets", variant="primary", elem_id="pre-upload-go")
        message = gr.Markdown(elem_id="pre-upload-message")
    gallery = gr.Gallery(label="Dataset preview (click an image to edit its caption)", columns=8, height=260,
                         visible=False, elem_id="pre-gallery", interactive=False, object_fit="contain")
    with gr.Row(equal_height=False):
        caption = gr.Textbox(label="Caption of the picked image", elem_id="pre-caption", scale=4, interactive=True,
                             info="Saved beside the image (its caption file), replacing the old caption.")
        save = gr.Button("Save caption", size="sm", elem_id="pre-caption-save", scale=1, min_width=120)
    return UploadPanel(name, files, upload, message, gallery, gr.State([]), caption, gr.State(""), save)


def preview(folder: str, problems: dict[str, str], extension: str = ".txt") -> tuple[dict, list[str]]:
    """Gallery update (each image captioned with its caption and, first, the scan's finding) + the paths."""
    root = Path(folder or "")
    if not folder or not root.is_dir():
        return gr.update(value=None, visible=False), []
    images = dataset_images(root)
    items = []
    for path in images:
        words = read_caption(root, path, extension) or "(no caption)"
        problem = problems.get(str(path)) or problems.get(str(path.resolve()))
        items.append((str(path), f"⚠ {problem} · {words}" if problem else words))
    return gr.update(value=items, visible=bool(items)), [str(p) for p in images]


def upload(ctx, name: str, files) -> tuple:
    """(message, the dataset path box, whether it worked)."""
    try:
        folder, count = save_upload(ctx, name, [getattr(f, "name", f) for f in (files or [])])
    except (UploadError, OSError) as err:
        return f"**Error:** {err}", gr.skip(), False
    return (f"Saved {count} file(s) into `{folder}`; the dataset path is set to it and the files are scanned.",
            str(folder), True)


def connect_panel(ctx, panel: UploadPanel, path_box, scan, scan_inputs: list, scan_outputs: list,
                  stale: list) -> None:
    """Upload -> set the dataset path -> scan (findings beside each image); pick an image -> edit its caption.
    `stale`: the scan's table and message, hidden when the path is edited (they describe the old one)."""
    ok = gr.State(False)
    path_box.input(lambda: (gr.update(visible=False), gr.update(visible=False), ""), None,
                   [stale[0], panel.gallery, stale[1]], show_progress="hidden")
    uploaded = panel.upload.click(lambda n, f: upload(ctx, n, f), [panel.name, panel.files],
                                  [panel.message, path_box, ok])
    on_form(uploaded.then, lambda worked, *v: scan(*v) if worked else [gr.skip()] * len(scan_outputs),
            [ok, *scan_inputs], scan_outputs, show_progress_on=stale[1])
    panel.gallery.select(pick, [panel.shown, path_box], [panel.image, panel.caption])
    panel.save.click(save_caption, [path_box, panel.image, panel.caption], [panel.message])


def pick(paths: list[str], folder: str, evt: gr.SelectData):
    path = paths[evt.index] if evt.index is not None and evt.index < len(paths) else ""
    return path, (read_caption(Path(folder), path) if path else "")


def save_caption(folder: str, image: str, text: str) -> str:
    if not image:
        return "Pick an image in the preview first."
    try:
        path = write_caption(Path(folder), image, text)
    except (UploadError, OSError) as err:
        return f"**Error:** {err}"
    return f"Caption saved to `{path.name}`."
