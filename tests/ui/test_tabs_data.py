"""The Samples tab (images, songs, text; one prompt across steps) and the Preprocess tab's scan."""
from __future__ import annotations

import json

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from studio.config import validate
from studio.queue import JobStore
from studio.ui.context import StudioContext
from studio.ui.dataset_view import cache_state, scan_dataset
from studio.ui.tabs.samples import AUDIO_SLOTS, build_samples_tab
from studio.ui.train_actions import preset_config


def write_sample(folder, stem, suffix, meta, payload):
    folder.mkdir(parents=True, exist_ok=True)
    if suffix == ".wav":
        from studio.sampling import write_wav

        write_wav(folder / f"{stem}{suffix}", *payload)
    else:
        (folder / f"{stem}{suffix}").write_text(payload)
    (folder / f"{stem}.json").write_text(json.dumps({**meta, "file": f"{stem}{suffix}"}))


@pytest.fixture
def samples_tab(home):
    ctx = StudioContext(store=JobStore())
    with gr.Blocks():
        tab = build_samples_tab(ctx)
    job = ctx.store.add(preset_config("tiny-sd15-lora"))
    return tab, job


def outputs_by_name(tab, values):
    """Map refresh() results onto names: job, step, prompt, summary, gallery, audio_row, audio0.., text, meta."""
    names = ["job", "step", "prompt", "summary", "gallery", "audio_row"]
    names += [f"audio{i}" for i in range(AUDIO_SLOTS)] + ["text", "meta", "signature"]
    return dict(zip(names, values))


def test_songs_and_text_with_their_metadata_and_one_prompt_across_steps(samples_tab):
    tab, job = samples_tab
    folder = __import__("pathlib").Path(job.run_dir) / "samples"
    tone = (np.sin(np.linspace(0, 200, 8000))[None] * 0.3, 8000)
    for step in (10, 20):
        write_sample(folder, f"step-{step:06d}_p0", ".wav", {"prompt": "calm piano", "seed": 3, "step": step,
                                                             "steps": 8, "guidance": 4.0}, tone)
        write_sample(folder, f"step-{step:06d}_p1", ".txt", {"prompt": "Say hi", "seed": 1, "step": step},
                     f"hello at {step}")
    out = outputs_by_name(tab, tab.refresh(job.id, "all", "all", ""))
    assert out["summary"].startswith("4 of 4")
    assert out["audio0"]["visible"] and out["audio0"]["label"].startswith("step 10 · “calm piano”")
    assert "hello at 20" in out["text"]["value"] and not out["gallery"]["visible"]
    assert list(out["meta"]["value"]["guidance"][:1]) == [4.0] and out["meta"]["visible"]
    compare = outputs_by_name(tab, tab.refresh(job.id, "all", "calm piano", ""))
    assert compare["summary"] == "2 of 4 sample(s) · “calm piano” across steps"
    labels = [compare[f"audio{i}"].get("label", "") for i in range(2)]
    assert "step 10" in labels[0] and "step 20" in labels[1]
    assert not compare["text"]["visible"]
    unchanged = tab.refresh(job.id, "all", "calm piano", compare["signature"])  # the timer's next tick
    assert len(unchanged) == len(tab.outputs)
    assert unchanged[:-1] == [gr.skip()] * (len(unchanged) - 1)  # nothing is resent


def test_scan_names_each_bad_file_with_its_reason(home, tmp_path):
    data = tmp_path / "pictures"
    data.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (96, 96), "red").save(data / f"{name}.png")
        (data / f"{name}.txt").write_text(f"a red square {name}")
    Image.new("RGB", (96, 96), "blue").save(data / "nocaption.png")
    (data / "broken.png").write_bytes(b"\x89PNG not really")
    (data / "broken.txt").write_text("broken")
    cfg = validate({"model": {"family": "sd15", "path": "tiny:sd15"},
                    "data": {"path": str(data), "resolution": 64, "min_image_side": 1}})
    result = scan_dataset(cfg)
    assert result.usable == 2
    bad = {row[0].rsplit("/", 1)[-1]: row[1] for row in result.rows}
    assert set(bad) == {"nocaption.png", "broken.png"}
    assert "caption" in bad["nocaption.png"]
    assert "2 usable image(s)" in result.message and "2 file(s) will be left out" in result.message
    assert "No cache yet" in cache_state(JobStore(), cfg)
