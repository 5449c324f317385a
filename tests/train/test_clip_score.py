"""`evaluation.evaluation_type=clip` (FIELDS E05): at each evaluation the sample prompts are rendered and
scored against their prompts with a CLIP model (a tiny random one here, written offline)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from studio.config import ConfigError, load_config
from tests.conftest import REPO, read_progress, run_studio

PRESET = str(REPO / "presets/tiny-sd15-lora.json")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from studio.families.tiny_image import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def _noise(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (64, 64, 3), dtype=np.uint8))


def test_the_score_is_a_bounded_number_that_follows_the_image(tiny_clip):
    from studio.train.clip_score import ClipScorer

    scorer = ClipScorer(str(tiny_clip), torch.device("cpu"))
    prompt = "a red circle on a plain background"
    first, second = scorer.scores([_noise(1), _noise(2)], [prompt, prompt])
    assert all(math.isfinite(v) and -100 <= v <= 100 for v in (first, second))
    assert first != second
    assert scorer.scores([_noise(1)], [prompt]) == [first]  # the same pair, the same score
    assert scorer.mean_score([_noise(1), _noise(2)], [prompt, prompt]) == pytest.approx((first + second) / 2,
                                                                                         abs=1e-3)


def _cfg(evaluation: dict, family: str = "sd15", **sections):
    return load_config({"model": {"family": family, "path": f"tiny:{family}"}, "data": {"path": str(REPO)},
                        "evaluation": evaluation, **sections})


def test_clip_settings_are_checked_before_anything_loads(tmp_path):
    prompts = {"sampling": {"prompts": ["a cat"]}}
    ok = _cfg({"strategy": "steps", "evaluation_type": "clip", "clip_model": str(tmp_path)}, **prompts)
    assert ok.evaluation.evaluation_type == "clip"  # no held-out data needed: it scores the prompts
    cases = [
        ({"strategy": "steps", "evaluation_type": "clip", "clip_model": str(tmp_path / "nope")}, "sd15", prompts,
         "evaluation.clip_model"),
        ({"strategy": "steps", "evaluation_type": "clip", "clip_model": str(tmp_path)}, "sd15", {},
         "sampling.prompts"),
        ({"strategy": "no", "evaluation_type": "clip", "clip_model": str(tmp_path)}, "sd15", prompts,
         "evaluation.strategy"),
        ({"strategy": "steps", "evaluation_type": "clip", "clip_model": str(tmp_path)}, "causal_lm", prompts,
         "does not make images"),
        ({"strategy": "steps", "evaluation_type": "clip", "clip_model": str(tmp_path),
          "early_stopping_patience": 2}, "sd15", prompts, "stops on the eval loss"),
    ]
    for evaluation, family, extra, expected in cases:
        with pytest.raises(ConfigError, match=expected):
            _cfg(evaluation, family, **extra)


@pytest.mark.slow
def test_a_tiny_run_logs_the_clip_score_at_its_evaluations(tmp_path, tiny_clip):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from studio.train.clip_score import ClipScorer

    run_dir = tmp_path / "run"
    result = run_studio(
        "train", PRESET, "--set", f"job.output_dir={run_dir}", "--set", "training.max_steps=4",
        "--set", "evaluation.strategy=steps", "--set", "evaluation.steps=2",
        "--set", "evaluation.evaluation_type=clip", "--set", f"evaluation.clip_model={tiny_clip}",
        "--set", "sampling.every_steps=2", "--set", "checkpointing.save_strategy=no", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    evals = {r["step"]: r for r in read_progress(run_dir) if r.get("event") == "eval"}
    assert sorted(evals) == [2, 4]
    assert all("eval_loss" not in r for r in evals.values())  # no held-out data: the CLIP score alone
    logged = {step: r["clip_score"] for step, r in evals.items()}
    assert all(math.isfinite(v) and -100 <= v <= 100 for v in logged.values())

    # The samples of the same steps are the images that were scored (same prompt, seed, weights).
    scorer = ClipScorer(str(tiny_clip), torch.device("cpu"))
    prompt = "a red circle on a plain background"
    for step, value in logged.items():
        image = Image.open(run_dir / "samples" / f"step-{step:06d}_p0.png").convert("RGB")
        assert scorer.mean_score([image], [prompt]) == pytest.approx(value, abs=1e-3)

    events = EventAccumulator(str(run_dir / "runs"))
    events.Reload()
    assert {e.step: round(e.value, 3) for e in events.Scalars("eval/clip_score")} == {
        step: round(value, 3) for step, value in logged.items()}
