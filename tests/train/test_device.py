"""`model.device` (FIELDS M09): a chosen device that is not there stops the job before anything loads."""
from __future__ import annotations

import pytest
import torch

from studio.config import load_config
from studio.config.errors import ConfigError
from studio.runfolder.device import job_device, mps_available
from tests.conftest import REPO, read_progress, run_studio

PRESET = str(REPO / "presets/tiny-sd15-lora.json")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_before_loading(tmp_path):
    run_dir = tmp_path / "run"
    result = run_studio("train", PRESET, "--set", f"job.output_dir={run_dir}", "--set", "model.device=cuda",
                        timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "model.device" in result.stderr + result.stdout and "CUDA" in result.stderr + result.stdout
    assert not any(r.get("event") == "loading" for r in read_progress(run_dir))  # nothing was loaded


@pytest.mark.skipif(mps_available(), reason="checks the refusal on a machine without MPS")
def test_mps_without_metal_is_refused():
    cfg = load_config({"model": {"path": "tiny:sd15", "device": "mps"}, "data": {"path": "demo:images"}})
    with pytest.raises(ConfigError, match="model.device"):
        job_device(cfg)


def test_cpu_and_auto_pick_a_device():
    cfg = load_config({"model": {"path": "tiny:sd15", "device": "cpu"}, "data": {"path": "demo:images"}})
    assert job_device(cfg).type == "cpu"
    cfg.model.device = "auto"
    expected = "cuda" if torch.cuda.is_available() else ("mps" if mps_available() else "cpu")
    assert job_device(cfg).type == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_choice_trains_on_the_gpu():
    cfg = load_config({"model": {"path": "tiny:sd15", "device": "cuda"}, "data": {"path": "demo:images"}})
    assert job_device(cfg).type == "cuda"
