"""Playground: generate jobs through the real queue worker from two sources of one tiny SD 1.5 run, same
seed; the written diffusers code reproduces the picture; a chat message to a tiny SFT run, whose written
transformers code gives the same answer; bad requests name their field."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.config import ConfigError
from studio.playground import adapter_sources, list_batches, playground_configs, read_batch
from tests.conftest import REPO, run_studio

pytestmark = pytest.mark.slow
PRESET = str(REPO / "presets/tiny-sd15-lora.json")


@pytest.fixture(scope="module")
def run_config(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("play") / "run"
    result = run_studio("train", PRESET, "--set", f"job.output_dir={run_dir}", "--set", "training.max_steps=4",
                        "--set", "checkpointing.save_steps=2", "--set", "sampling.prompts=[]",
                        "--set", "sampling.at_end=false", "--set", "job.name=play", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((run_dir / "training_args.json").read_text())["config"]


def test_bad_requests_name_their_field(run_config):
    with pytest.raises(ConfigError, match="playground.prompt"):
        playground_configs(run_config, ["final"], "  ")
    with pytest.raises(ConfigError, match="checkpoint-99.*offers: checkpoint-2, checkpoint-4, final"):
        playground_configs(run_config, ["checkpoint-99"], "a red circle")
    with pytest.raises(ConfigError, match="seed"):
        playground_configs(run_config, ["final"], "a red circle", seed=-1)


def test_two_sources_one_seed_through_the_queue(run_config, tmp_path):
    from studio.queue import JobStore, Worker

    run_dir = run_config["job"]["output_dir"]
    # checkpoint-4 is the final step's checkpoint (kept resumable); "final" is the exported adapter
    assert adapter_sources(run_dir) == ["checkpoint-2", "checkpoint-4", "final"]
    store = JobStore(tmp_path / "queue.db")
    for cfg in playground_configs(run_config, ["checkpoint-2", "final"], "a red circle", seed=7, steps=3,
                                  guidance=2.0, batch="b1"):
        store.add(cfg, kind="generate")
    finished = Worker(store, poll_s=0.2).run_until_empty()
    assert [j.status for j in finished] == ["completed", "completed"], [j.error for j in finished]
    assert list_batches(run_dir) == ["b1"]
    results = read_batch(run_dir, "b1")
    assert [r["source"] for r in results] == ["checkpoint-2", "final"]
    for r in results:
        assert {k: r["settings"][k] for k in ("prompt", "seed", "steps", "guidance")} == \
            {"prompt": "a red circle", "seed": 7, "steps": 3, "guidance": 2.0}
    early, final = (np.asarray(Image.open(r["path"]), dtype=np.int16) for r in results)
    assert np.abs(early - final).max() > 0, "step 2 and step 4 of the adapter gave the same picture"

    # The ComfyUI workflow names the kohya file that sits in the source folder, with the same seed.
    workflow = json.loads(open(results[1]["workflow"]).read())
    assert workflow["6"]["inputs"]["seed"] == 7
    assert (REPO / run_dir / workflow["2"]["inputs"]["lora_name"]).is_file()

    # "Copy as diffusers code" makes the same picture with diffusers alone.
    script = tmp_path / "reproduce.py"
    script.write_text(results[1]["code"])
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    again = np.asarray(Image.open(tmp_path / "result.png"), dtype=np.int16)
    assert np.abs(again - final).max() <= 2


def test_the_tab_shows_queued_requests_at_once(studio_home):
    """Generate queues one job per source; the result slots show them before any folder exists."""
    from studio.queue import JobStore
    from studio.ui.context import StudioContext
    from studio.ui.tabs.playground import pick_run, playground_refresh, queue_generate, run_choices
    from studio.ui.train_actions import preset_config

    ctx = StudioContext(store=JobStore(studio_home / "queue.db"))
    run = ctx.store.add(preset_config("tiny-sd15-lora"), name="tiny")
    run_dir = Path(run.run_dir)
    for folder in (run_dir / "checkpoint-10", run_dir):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_model.safetensors").write_bytes(b"x")
    (run_dir / "checkpoint-10" / "manifest.json").write_text("{}")
    assert run_choices(ctx) == []  # a pending run is not offered
    ctx.store.stop(run.id)
    assert [c[1] for c in run_choices(ctx)] == [run.id]
    assert pick_run(ctx, run.id)[0]["value"] == ["checkpoint-10", "final"]
    message, batch = queue_generate(ctx, run.id, ["checkpoint-10", "final"], "a red circle", "", 7, 3, -1, 64, 0.7)
    assert message.startswith("Queued 2 generate job(s)"), message
    assert batch["value"] in batch["choices"]  # the browser refuses a value that is not a choice
    out = playground_refresh(ctx, run.id, batch["value"], "")
    assert [v["title"] for v in out[1]] == ["**checkpoint-10** · queued as job #2", "**final** · queued as job #3"]
    assert playground_refresh(ctx, run.id, batch["value"], out[-1])[1] == {"__type__": "update"}  # unchanged: skip
    bad, _ = queue_generate(ctx, run.id, [], "a red circle", "", 7, 3, -1, 64, 0.7)
    assert "playground.sources" in bad


def test_a_chat_with_a_trained_llm_and_its_code(tmp_path):
    """The LLM Playground: a chat message to two sources of a tiny SFT run, through the real worker; each
    answer carries its settings, and its "copy as code" (transformers + PEFT alone) gives the same text."""
    from studio.queue import JobStore, Worker

    run_dir = tmp_path / "llm"
    result = run_studio("train", str(REPO / "presets/tiny-llm-sft.json"), "--set", f"job.output_dir={run_dir}",
                        "--set", "training.max_steps=4", "--set", "checkpointing.save_steps=2",
                        "--set", "job.name=llm", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_config = json.loads((run_dir / "training_args.json").read_text())["config"]
    store = JobStore(tmp_path / "queue.db")
    for cfg in playground_configs(run_config, ["checkpoint-2", "final"], "Hello, who are you?", seed=3,
                                  sampling={"max_new_tokens": 12}, batch="chat"):
        store.add(cfg, kind="generate")
    finished = Worker(store, poll_s=0.2).run_until_empty()
    assert [j.status for j in finished] == ["completed", "completed"], [j.error for j in finished]
    results = read_batch(run_dir, "chat")
    assert [r["source"] for r in results] == ["checkpoint-2", "final"]
    for r in results:
        assert r["settings"]["prompt"] == "Hello, who are you?" and r["settings"]["max_new_tokens"] == 12
        script = tmp_path / f"{r['source']}.py"
        script.write_text(r["code"])
        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300, env={**os.environ, "PYTHONPATH": ""})
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip() == Path(r["path"]).read_text(encoding="utf-8").strip()
    assert any(Path(r["path"]).read_text(encoding="utf-8").strip() for r in results)  # not two empty answers
