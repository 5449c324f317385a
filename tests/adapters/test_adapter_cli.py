"""End to end through the command line: `python -m studio train` writes and checks every final file
(adapter, kohya file, merged model; the kohya file in checkpoints too), then `python -m studio export`
rebuilds the run and exports again. Runs in-process (`studio.cli.main`) to skip interpreter start-up."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import read_progress


def _train(tmp_path: Path, adapter: dict, precision: str = "no") -> Path:
    from studio.cli import main

    run = tmp_path / "run"
    config = {"model": {"family": "sd15", "path": "tiny:sd15"}, "data": {"path": "demo:images", "resolution": 64},
              "adapter": {"rank": 4, "alpha": 4, **adapter}, "job": {"name": "cli_run", "output_dir": str(run)},
              "training": {"learning_rate": 0.01, "batch_size": 2, "max_steps": 3},
              "scheduler": {"name": "constant"},
              "memory": {"mixed_precision": precision, "gradient_checkpointing": False},
              "dataloader": {"num_workers": 0}, "logging": {"tensorboard": False},
              "checkpointing": {"save_strategy": "steps", "save_steps": 2, "max_checkpoints": 1}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # in-process runs: each run sets its own precision
    assert main(["train", str(path), "--no-progress"]) == 0, (run / "console.log").read_text()[-3000:]
    return run


def test_train_writes_checked_files_and_export_rebuilds_them(tmp_path):
    from safetensors import safe_open

    from studio.cli import main

    run = _train(tmp_path, {"type": "lora", "merge_after_training": True})
    names = {p.name for p in run.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "cli_run_kohya.safetensors", "merged"} <= names
    assert (run / "merged" / "model_index.json").is_file()
    assert (run / "checkpoint-3" / "cli_run_kohya.safetensors").is_file()  # the final state (max_checkpoints 1)
    saved = [e for e in read_progress(run) if e.get("event") == "saved"]
    assert [e["format"] for e in saved] == ["peft", "kohya", "merged"]
    assert all(e["verified"] is True and e["effect_error"] < 1e-3 for e in saved)
    assert saved[0]["path"].endswith("adapter_model.safetensors")
    with safe_open(str(run / "cli_run_kohya.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_steps"] == "3" and meta["ss_network_dim"] == "4" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_resolution"] == "(64, 64)" and meta["ss_network_module"] == "networks.lora"

    out = tmp_path / "exports"
    assert main(["export", str(run), "--format", "kohya", "--out", str(out / "mine.safetensors")]) == 0
    assert main(["export", str(run), "--format", "peft", "--out", str(out / "peft")]) == 0
    assert main(["export", str(run), "--format", "merged", "--out", str(out / "merged")]) == 0
    assert (out / "mine.safetensors").is_file() and (out / "peft" / "adapter_config.json").is_file()
    assert (out / "merged" / "unet" / "config.json").is_file()
    assert not [p for p in out.rglob(".tmp-*")], "temp files left behind"


def test_bf16_lycoris_run_with_text_encoder(tmp_path):
    """bf16 mixed precision: the check still runs in fp32 (half weights upcast, accelerate's autocast
    wrapper bypassed), so the adapter files must match to float32 noise and the merged model to bf16's."""
    from safetensors.torch import load_file

    run = _train(tmp_path, {"type": "loha", "backend": "lycoris", "train_text_encoder": True,
                            "text_encoder_lr": 0.001, "merge_after_training": True}, precision="bf16")
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["studio_format"] == "lycoris" and config["algo"] == "loha"
    keys = load_file(str(run / "cli_run_kohya.safetensors")).keys()
    assert any(k.startswith("lora_unet_") and k.endswith(".hada_w1_a") for k in keys)
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in keys)
    saved = {e["format"]: e for e in read_progress(run) if e.get("event") == "saved"}
    assert all(e["verified"] for e in saved.values()) and set(saved) == {"peft", "kohya", "merged"}
    assert saved["peft"]["effect_error"] < 1e-3 and saved["kohya"]["effect_error"] < 1e-3


def test_export_of_a_folder_that_is_no_run_fails_cleanly(tmp_path, capsys):
    from studio.cli import main

    assert main(["export", str(tmp_path), "--format", "kohya"]) == 1
    assert "no training_args.json" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["ckpt"])
def test_cli_refuses_unknown_formats(fmt):
    from studio.cli import main

    with pytest.raises(SystemExit):
        main(["export", "somewhere", "--format", fmt])
