"""The estimate task: layers ranked by gradient norm, written as a module list the Train form can load."""
from __future__ import annotations

import json

import pytest

from studio.config import load_config
from studio.config.loader import deep_merge
from tests.conftest import read_progress
from tests.music.conftest import music_config

pytestmark = pytest.mark.slow


def test_estimate_ranks_every_projection_and_writes_loadable_targets(preprocessed, songs_dir, tmp_path,
                                                                      tiny_acestep):
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

    from studio.adapters.targets import resolve_targets
    from studio.config import finalize_job
    from studio.commands.estimate import estimate_job

    run_dir = tmp_path / "estimate"
    run_dir.mkdir()
    config = music_config(songs_dir / ".studio_cache", run_dir)
    assert estimate_job(finalize_job(load_config(config, [])), run_dir, batches=2, top_k=3) == 0
    assert read_progress(run_dir)[-1]["event"] == "done"
    report = json.loads((run_dir / "estimate_report.json").read_text())
    # 2 blocks x (self 4 + cross 4 + MLP 3) projections, each with a gradient
    assert report["candidates"] == 22 and len(report["ranking"]) == 22
    norms = [row["grad_norm"] for row in report["ranking"]]
    assert norms == sorted(norms, reverse=True) and min(norms) > 0
    assert set(report["by_scope"]) == {"self", "cross"}
    top = json.loads((run_dir / "target_modules.json").read_text())
    assert top == {"adapter": {"target_modules": [row["module"] for row in report["ranking"][:3]]}}
    # The Train form merges the file like a preset: exactly those layers get the adapter.
    cfg = load_config(deep_merge(config, top), [])
    transformer = AceStepTransformer1DModel.from_pretrained(str(tiny_acestep), subfolder="transformer")
    spec = resolve_targets(transformer, cfg.adapter, ["to_q"], {"self": "self_attn", "cross": "cross_attn"})
    assert sorted(spec.modules) == sorted(top["adapter"]["target_modules"])
