"""One conformance test over every registered family with a trainer (studio/registry/families.py): its
tiny model is written and loaded through the real code, the adapter is injected, two optimizer steps
run (finite loss, the adapter's weights move), a sample is rendered, the adapter is saved, loaded back
through the ecosystem's loader and compared with the trained model (the export checks), and a run
resumed from its first checkpoint ends with exactly the weights of the uninterrupted run.

A family added later is covered by its registry row (and the demo data of its kind)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from studio.registry.families import demo_config, family_ids
from studio.runfolder import read_progress

pytestmark = pytest.mark.slow

FAST = {"training": {"max_steps": 2, "batch_size": 1, "gradient_accumulation_steps": 1, "learning_rate": 0.01,
                     "seed": 3},
        "adapter": {"type": "lora", "rank": 4, "alpha": 4, "dropout": 0.0},
        "scheduler": {"name": "constant", "warmup_steps": 0, "warmup_ratio": 0.0},
        "memory": {"mixed_precision": "no", "gradient_checkpointing": False},
        "dataloader": {"num_workers": 0},
        "checkpointing": {"save_strategy": "steps", "save_steps": 1, "max_checkpoints": 3},
        "evaluation": {"strategy": "no"}, "logging": {"logging_steps": 1, "tensorboard": False},
        "sampling": {"prompts": [{"prompt": "a red circle", "seed": 1}], "every_steps": 0, "at_end": True,
                     "default_steps": 2, "max_new_tokens": 4}}


def _config(family: str, run_dir: Path, **extra):
    from studio.config import deep_merge, finalize_job, load_config

    data = deep_merge(deep_merge(demo_config(family), FAST), {"job": {"output_dir": str(run_dir)}, **extra})
    return finalize_job(load_config(data))


def _train(cfg, run_dir: Path) -> list[dict]:
    from studio.commands.train import run_training

    run_dir.mkdir(parents=True, exist_ok=True)
    code = run_training(cfg, run_dir)
    records = read_progress(run_dir)[0]
    assert code == 0, [r for r in records if r.get("event") in ("error", "warning")]
    return records


def _initial_adapter(cfg) -> dict[str, torch.Tensor]:
    """The freshly injected adapter of `cfg` (what training starts from)."""
    from studio.adapters import inject_adapter
    from studio.families.base import build_family

    torch.manual_seed(cfg.training.seed)
    family = build_family(cfg, torch.device("cpu"), torch.float32)
    family.load()
    return inject_adapter(family, cfg).state_dict()


@pytest.mark.parametrize("family", family_ids(trainable=True))
def test_family_conforms(family, tmp_path):
    cfg = _config(family, tmp_path / "run")
    records = _train(cfg, tmp_path / "run")

    steps = [r for r in records if "event" not in r]
    assert [r["step"] for r in steps] == [1, 2] and all(math.isfinite(r["loss"]) for r in steps)
    trained = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    initial = _initial_adapter(cfg)
    # The file may prefix the keys with the network they belong to (diffusers: `unet.`).
    pairs = [(trained[f], initial[k]) for k in initial for f in trained if f == k or f.endswith("." + k)]
    assert trained and len(pairs) == len(initial) == len(trained)
    assert any(not torch.equal(t, i.float()) for t, i in pairs), "the adapter did not train"

    samples = [r for r in records if r.get("event") == "sample"]
    assert samples and all(Path(r["path"]).is_file() for r in samples)
    saved = [r for r in records if r.get("event") == "saved"]
    assert saved and saved[0]["format"] == "peft"
    assert all(r.get("verified") is not False for r in saved), saved  # loaded back and compared
    assert any(r.get("verified") for r in saved), "no export was loaded back through the ecosystem's loader"

    resumed_dir = tmp_path / "resumed"
    resumed_cfg = _config(family, resumed_dir, checkpointing={"resume_from": str(tmp_path / "run" / "checkpoint-1")},
                          sampling={"prompts": [], "at_end": False}, adapter={"verify_exports": False})
    resumed = _train(resumed_cfg, resumed_dir)
    assert [r["step"] for r in resumed if r.get("event") == "resumed"] == [1]
    again = load_file(str(resumed_dir / "adapter_model.safetensors"))
    assert all(torch.equal(again[k], trained[k]) for k in trained), "resuming changed the result"
