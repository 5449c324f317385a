"""End-to-end SD 1.5 / SDXL training on the tiny models, through the CLI as a user runs it."""
from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, read_progress, run_studio, studio_cmd

PRESET = str(REPO / "presets/tiny-sd15-lora.json")
QUIET = ["--set", "sampling.prompts=[]", "--set", "sampling.at_end=false"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    # The one-minute target of the demo is measured by `python -m bench`, not by a timed test.
    run_dir = tmp_path_factory.mktemp("tiny-sd15") / "run"
    result = run_studio("train", PRESET, "--set", f"job.output_dir={run_dir}", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def test_run_folder_matches_the_contract(trained_run):
    run_dir = trained_run
    for name in ("training_args.json", "adapter_model.safetensors", "adapter_config.json", "progress.jsonl",
                 "console.log"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "runs").glob("events.out.tfevents.*")), "TensorBoard events missing"
    args = json.loads((run_dir / "training_args.json").read_text())
    assert args["config"]["model"]["family"] == "sd15" and args["seed"] == 42
    assert {"torch", "diffusers", "peft"} <= set(args["versions"])
    assert args["dataset_fingerprint"]
    records = read_progress(run_dir)
    steps = [r for r in records if "loss" in r and "step" in r]
    assert steps and all({"elapsed_s", "eta_s", "lr", "total", "epoch"} <= set(r) for r in steps)
    assert steps[-1]["step"] == steps[-1]["total"] == 20
    assert records[-1]["event"] == "done"
    checkpoints = sorted(p.name for p in run_dir.glob("checkpoint-*"))
    # save_steps 10, and the final state stays resumable (a longer run continues at step 21)
    assert checkpoints == ["checkpoint-10", "checkpoint-20"]
    assert (run_dir / "checkpoint-20" / "manifest.json").is_file()
    samples = sorted((run_dir / "samples").glob("*.png"))
    assert len(samples) == 2  # every 10 steps (step 10) and at the end (step 20)
    meta = json.loads(samples[0].with_suffix(".json").read_text())
    assert {"prompt", "seed", "steps", "guidance", "scheduler"} <= set(meta)
    assert "step 20/20" in (run_dir / "console.log").read_text() or "done:" in (run_dir / "console.log").read_text()


def _fixed_pair_loss(adapter_dir=None) -> float:
    """Loss over all training images on one fixed set of (noise, timestep) pairs."""
    from studio.adapters import inject_adapter
    from studio.config import load_config
    from studio.families.base import build_family

    cfg = load_config(PRESET)
    family = build_family(cfg, torch.device("cpu"), torch.float32)
    family.load()
    if adapter_dir is not None:
        handle = inject_adapter(family, cfg)
        weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
        handle.load_state_dict({k.removeprefix("unet."): v for k, v in weights.items()})
    dataset = family.train_dataset()
    batch = family.collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return float(family.loss(batch, torch.Generator().manual_seed(1234)))


def test_training_lowers_the_loss_on_fixed_noise(trained_run):
    run_dir = trained_run
    before, after = _fixed_pair_loss(), _fixed_pair_loss(run_dir)
    assert after < before - 1e-3, (before, after)


def test_adapter_loads_in_diffusers_and_changes_the_image(trained_run, tiny_sd15):
    from diffusers import StableDiffusionPipeline

    run_dir = trained_run
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)

    def render():
        out = pipe("a red circle", num_inference_steps=3, height=64, width=64, output_type="np",
                   generator=torch.Generator().manual_seed(0))
        return out.images[0]

    base = render()
    pipe.load_lora_weights(str(run_dir))
    adapted = render()
    assert np.abs(base - adapted).mean() > 1e-3


def _wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError


def test_sigkill_then_auto_resume_ends_with_the_uninterrupted_weights(tmp_path):
    common = ["--set", "training.max_steps=24", "--set", "checkpointing.save_steps=4", "--set",
              "logging.logging_steps=1", *QUIET]
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    ref = run_studio("train", PRESET, *common, "--set", f"job.output_dir={ref_dir}")
    assert ref.returncode == 0, ref.stderr[-2000:]

    cmd = studio_cmd("train", PRESET, *common, "--set", f"job.output_dir={cut_dir}")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = lambda: any(r.get("event") == "checkpoint" and r["step"] >= 8 for r in read_progress(cut_dir))  # noqa: E731
    assert _wait_for(committed, proc), "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not any(r.get("event") == "done" for r in read_progress(cut_dir))

    again = run_studio("train", PRESET, *common, "--set", f"job.output_dir={cut_dir}", "--set",
                       "checkpointing.auto_resume=true")
    assert again.returncode == 0, again.stderr[-2000:]
    records = read_progress(cut_dir)
    resumed = [r for r in records if r.get("event") == "resumed"]
    assert resumed and resumed[-1]["step"] >= 8 and resumed[-1]["step"] % 4 == 0
    first_after = next(r for r in records[records.index(resumed[-1]):] if "loss" in r)
    assert first_after["step"] == resumed[-1]["step"] + 1  # continues the step count
    a, b = load_file(str(ref_dir / "adapter_model.safetensors")), load_file(str(cut_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_training_longer_from_the_final_checkpoint_ends_with_the_uninterrupted_weights(tmp_path):
    """max_steps ends inside an epoch (3 of its 4 batches); raising it with auto_resume continues that
    epoch at its 4th batch, exactly as a run that had the higher max_steps from the start."""
    common = ["--set", "checkpointing.save_steps=100", "--set", "logging.logging_steps=1", *QUIET]
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "longer"
    assert run_studio("train", PRESET, *common, "--set", "training.max_steps=6",
                      "--set", f"job.output_dir={ref_dir}").returncode == 0
    assert run_studio("train", PRESET, *common, "--set", "training.max_steps=3",
                      "--set", f"job.output_dir={run_dir}").returncode == 0
    again = run_studio("train", PRESET, *common, "--set", "training.max_steps=6", "--set",
                       "checkpointing.auto_resume=true", "--set", f"job.output_dir={run_dir}")
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = [r for r in read_progress(run_dir) if r.get("event") == "resumed"]
    assert resumed[-1]["step"] == 3
    losses = [[(r["step"], r["loss"]) for r in read_progress(d) if "loss" in r][-3:] for d in (ref_dir, run_dir)]
    assert losses[0] == losses[1]  # steps 4-6: the same batches and noise
    a, b = load_file(str(ref_dir / "adapter_model.safetensors")), load_file(str(run_dir / "adapter_model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_stop_file_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(studio_cmd("train", PRESET, "--set", "training.max_steps=5000", "--set",
                                       "logging.logging_steps=1", *QUIET, "--set", f"job.output_dir={run_dir}"),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: any("loss" in r for r in read_progress(run_dir)), proc)
    (run_dir / "control").mkdir(exist_ok=True)
    (run_dir / "control" / "STOP").touch()
    assert proc.wait(timeout=120) == 0
    last = read_progress(run_dir)[-1]
    assert last["event"] == "stopped"
    assert (run_dir / f"checkpoint-{last['step']}" / "manifest.json").is_file()


def test_sdxl_trains_and_its_adapter_changes_the_image(tmp_path, tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline

    run_dir = tmp_path / "xl"
    result = run_studio("train", PRESET, "--set", "model.family=sdxl", "--set", "model.path=tiny:sdxl",
                        "--set", "training.max_steps=3", "--set", "training.learning_rate=0.01", *QUIET,
                        "--set", f"job.output_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    pipe.set_progress_bar_config(disable=True)
    render = lambda: pipe("a blue square", num_inference_steps=2, height=64, width=64, output_type="np",  # noqa: E731
                          generator=torch.Generator().manual_seed(0)).images[0]
    base = render()
    pipe.load_lora_weights(str(run_dir))
    assert np.abs(base - render()).mean() > 1e-4
