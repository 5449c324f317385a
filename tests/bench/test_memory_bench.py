"""bench.memory at smoke size: each variant in its own process, timed through the studio's Loop; what the
machine cannot run is reported with the studio's own refusal."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.slow
def test_memory_bench_times_variants_and_reports_refusals(tmp_path):
    from bench.memory import main

    assert main(["presets/tiny-sd15-lora.json", "--set", "model.device=cpu", "--steps", "1",
                 "--variants", "baseline,nf4-bnb", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "memory-tiny-sd15-lora.json").read_text())
    baseline, nf4 = result["variants"]["baseline"], result["variants"]["nf4-bnb"]
    assert baseline["s_per_step"] > 0 and baseline["peak_vram_gb"] == 0.0
    if not torch.cuda.is_available():
        assert "needs a CUDA GPU" in nf4["refused"]
    assert "baseline" in (tmp_path / "memory-tiny-sd15-lora.txt").read_text()
