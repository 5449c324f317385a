"""Side-Step import (seed 000): its preprocessed `.pt` songs and its `checkpoint-epoch-N` LoRA folders,
written here in Side-Step's layout with torch.save at the tiny ACE-Step model's shapes, converted, and
trained from."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import read_progress, run_studio
from tests.music.conftest import music_config

LATENT_DIM, HIDDEN = 8, 32  # the tiny ACE-Step model's latent channels and condition width
# ACE-Step 1.5's own decoder names (what Side-Step's PEFT files use) for diffusers' AceStepTransformer1DModel's
ORIGINAL = {".to_q.": ".q_proj.", ".to_k.": ".k_proj.", ".to_v.": ".v_proj.", ".to_out.0.": ".o_proj."}


def write_sidestep_song(path: Path, frames: int, states: int, seed: int, **replace) -> None:
    """One song as Side-Step's preprocessing saves it (its pass 2 dict)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(states)
    mask[-2:] = 0  # padded condition states
    song = {"target_latents": torch.randn(frames, LATENT_DIM, generator=g),
            "attention_mask": torch.ones(frames),
            "encoder_hidden_states": torch.randn(states, HIDDEN, generator=g),
            "encoder_attention_mask": mask,
            "context_latents": torch.cat([torch.zeros(frames, LATENT_DIM), torch.ones(frames, LATENT_DIM)], -1),
            "metadata": {"filename": f"{path.stem}.wav", "caption": f"song {seed}", "lyrics": "[Instrumental]",
                         "bpm": 120, "keyscale": "C major", "is_instrumental": True, "prompt_override": None}}
    song.update(replace)
    torch.save(song, path)


@pytest.fixture(scope="module")
def sidestep_dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sidestep-tensors")
    write_sidestep_song(folder / "track_001.pt", frames=50, states=14, seed=1)
    write_sidestep_song(folder / "track_002.pt", frames=40, states=11, seed=2)
    (folder / "manifest.json").write_text(json.dumps({"samples": ["track_001.pt", "track_002.pt"]}))
    return folder


def _family(cfg):
    from studio.families.base import build_family

    family = build_family(cfg, torch.device("cpu"), torch.float32)
    family.load()
    return family


@pytest.fixture(scope="module")
def sidestep_checkpoint(tmp_path_factory, tiny_acestep, sidestep_dataset) -> tuple[Path, dict]:
    """checkpoint-epoch-3 of a rank-4 LoRA on q/k/v/o, as Side-Step writes it; returns it with the
    weights under diffusers' names (what the import must give back)."""
    from studio.adapters import inject_adapter
    from studio.config import load_config

    cfg = load_config(music_config(sidestep_dataset, tmp_path_factory.mktemp("unused")))
    handle = inject_adapter(_family(cfg), cfg)
    torch.manual_seed(5)
    weights = {k: torch.randn_like(v) for k, v in handle.state_dict().items()}  # lora_B non-zero too
    sidestep = {}
    for key, value in weights.items():
        name = key
        for diffusers_name, original in ORIGINAL.items():
            name = name.replace(diffusers_name, original)
        sidestep["base_model.model." + name] = value
    folder = tmp_path_factory.mktemp("sidestep-out") / "checkpoint-epoch-3"
    folder.mkdir()
    save_file(sidestep, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "bias": "none", "use_dora": False,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "task_type": None}))
    params = [torch.nn.Parameter(v.clone()) for v in weights.values()]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    torch.save({"epoch": 3, "global_step": 12, "optimizer_state_dict": optimizer.state_dict(),
                "scheduler_state_dict": {"last_epoch": 12}}, folder / "training_state.pt")
    save_file({"epoch": torch.tensor([3]), "global_step": torch.tensor([12])},
              str(folder / "training_state.safetensors"))
    return folder, weights


def test_a_dataset_becomes_a_song_cache(sidestep_dataset, tmp_path):
    from studio.data.manifest import CacheManifest, read_tensors
    from studio.families.sidestep_import import convert_dataset

    out = tmp_path / "cache"
    assert convert_dataset(sidestep_dataset, out) == ["track_001", "track_002"]
    manifest = CacheManifest(out, "audio")
    tensors = read_tensors(manifest.tensor_file("track_001", "song"))
    original = torch.load(sidestep_dataset / "track_001.pt", weights_only=True)
    assert torch.equal(tensors["target_latents"], original["target_latents"])
    assert torch.equal(tensors["encoder_hidden_states"], original["encoder_hidden_states"][:12])  # padding dropped
    assert manifest.entries["track_001"]["meta"]["caption"] == "song 1"


def test_a_file_with_the_wrong_keys_is_named(tmp_path):
    from studio.families.sidestep_import import ImportProblem, convert_dataset

    src = tmp_path / "tensors"
    src.mkdir()
    write_sidestep_song(src / "good.pt", 20, 6, seed=1)
    torch.save({"latents": torch.zeros(3, LATENT_DIM), "metadata": {}}, src / "odd.pt")
    write_sidestep_song(src / "flat.pt", 20, 6, seed=2, encoder_attention_mask=torch.ones(3))
    with pytest.raises(ImportProblem) as err:
        convert_dataset(src, tmp_path / "out")
    message = str(err.value)
    assert "odd.pt: missing target_latents, encoder_hidden_states, encoder_attention_mask" in message
    assert "flat.pt: shapes" in message and "good.pt" not in message
    assert not (tmp_path / "out").exists()  # nothing written while a file is bad


def test_a_checkpoint_becomes_the_starting_adapter(sidestep_checkpoint, sidestep_dataset, tmp_path):
    from studio.adapters import inject_adapter
    from studio.config import load_config

    folder, weights = sidestep_checkpoint
    out = tmp_path / "adapter"
    result = run_studio("import-sidestep", str(folder), str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "sidestep_import.json").read_text())
    assert record["epoch"] == 3 and record["global_step"] == 12
    assert record["adapter"] == {"type": "lora", "rank": 4, "alpha": 8.0,
                                 "target_modules": ["to_q", "to_k", "to_v", "to_out.0"]}
    cfg = load_config(music_config(sidestep_dataset, tmp_path / "run",
                                   adapter={**record["adapter"], "init_from": str(out)}))
    started = inject_adapter(_family(cfg), cfg).state_dict()
    assert started.keys() == weights.keys()
    assert all(torch.equal(started[k], weights[k]) for k in weights)


def test_training_runs_from_the_converted_dataset_and_checkpoint(sidestep_checkpoint, sidestep_dataset, tmp_path):
    folder, _ = sidestep_checkpoint
    data, adapter = tmp_path / "songs", tmp_path / "adapter"
    assert run_studio("import-sidestep", str(sidestep_dataset), str(data)).returncode == 0
    assert run_studio("import-sidestep", str(folder), str(adapter)).returncode == 0
    record = json.loads((adapter / "sidestep_import.json").read_text())
    run_dir = tmp_path / "run"
    config = music_config(data, run_dir, adapter={**record["adapter"], "init_from": str(adapter)},
                          training={"max_steps": 2}, sampling={"prompts": []})
    config["data"].pop("min_duration")
    path = tmp_path / "job.json"
    path.write_text(json.dumps(config))
    result = run_studio("train", str(path), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = read_progress(run_dir)
    losses = [r["loss"] for r in records if "loss" in r and "event" not in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert records[-1]["event"] == "done"
    assert "converted from side-step" in (run_dir / "console.log").read_text()  # the user is told


def test_the_command_refuses_what_is_not_side_step(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_studio("import-sidestep", str(empty), str(tmp_path / "out"))
    assert result.returncode == 2 and "no Side-Step song files" in result.stderr
    lokr = tmp_path / "checkpoint-epoch-1"
    lokr.mkdir()
    save_file({"x": torch.zeros(1)}, str(lokr / "lokr_weights.safetensors"))
    result = run_studio("import-sidestep", str(lokr), str(tmp_path / "out2"))
    assert result.returncode == 2 and "LoKR" in result.stderr
