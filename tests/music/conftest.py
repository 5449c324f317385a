"""Music fixtures: the tiny ACE-Step pipeline, a folder of short synthetic songs next to three broken
files, its preprocessed cache, and one 4-step training run on it (each built once per session: the
VAE dominates the cost on a CPU)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SONG_SECONDS = 2.0
MIN_SECONDS = 1.5  # the 1-second clip must be too short, the songs long enough
BAD = {"corrupt.mp3": "cannot be decoded", "silent.wav": "silent", "short.wav": "too short"}


def write_songs(folder: Path) -> Path:
    """Two synthetic songs (one 24 kHz stereo with lyrics and metadata, one 32 kHz mono instrumental)
    plus a corrupt mp3, a silent wav and a 1-second clip."""
    import soundfile as sf

    from studio.data.audio import synth_song

    folder.mkdir(parents=True, exist_ok=True)
    song = synth_song(261.63, True, 120, SONG_SECONDS, 24_000, seed=0)
    sf.write(str(folder / "major_song.wav"), song.T, 24_000)
    (folder / "major_song.txt").write_text("bright major chords, fast tempo", encoding="utf-8")
    (folder / "major_song.lyrics.txt").write_text("[verse]\nla la la", encoding="utf-8")
    (folder / "major_song.json").write_text('{"bpm": 120, "key": "C major", "time_signature": "4/4"}')
    mono = synth_song(220.0, False, 80, SONG_SECONDS, 32_000, seed=1)[0]
    sf.write(str(folder / "minor_song.flac"), mono, 32_000)
    (folder / "minor_song.txt").write_text("slow minor chords", encoding="utf-8")
    (folder / "corrupt.mp3").write_bytes(b"ID3\x03\x00\x00\x00" + np.random.default_rng(0).bytes(4000))
    sf.write(str(folder / "silent.wav"), np.zeros((48_000 * 2, 2), dtype=np.float32), 48_000)
    sf.write(str(folder / "short.wav"), synth_song(330.0, True, 120, 1.0, 48_000, seed=2).T, 48_000)
    return folder


def music_config(songs: Path, out: Path, **sections) -> dict:
    cfg = {"job": {"name": "tiny_music", "output_dir": str(out)},
           "model": {"family": "acestep", "path": "tiny:acestep", "variant": "turbo"},
           "data": {"path": str(songs), "min_duration": MIN_SECONDS},
           "adapter": {"type": "lora", "rank": 4, "alpha": 8, "dropout": 0.0},
           "training": {"learning_rate": 0.003, "batch_size": 1, "gradient_accumulation_steps": 1, "max_steps": 4,
                        "seed": 7},
           "scheduler": {"name": "constant", "warmup_steps": 0},
           "memory": {"mixed_precision": "no", "gradient_checkpointing": True},
           "dataloader": {"num_workers": 0}, "checkpointing": {"save_strategy": "no"},
           "logging": {"logging_steps": 1, "tensorboard": False},
           "sampling": {"prompts": [{"prompt": "bright major chords", "lyrics": "la la", "seed": 3}],
                        "audio_seconds": 0.3}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


@pytest.fixture(scope="session")
def tiny_acestep() -> Path:
    from studio.families.tiny import ensure_tiny_model

    return ensure_tiny_model("acestep", os.environ["STUDIO_HOME"])


@pytest.fixture(scope="session")
def songs_dir(tmp_path_factory) -> Path:
    return write_songs(tmp_path_factory.mktemp("songs"))


@pytest.fixture(scope="session")
def preprocessed(songs_dir, tiny_acestep, tmp_path_factory) -> Path:
    """`python -m studio preprocess` in-process; returns its run folder (progress.jsonl)."""
    from studio.config import finalize_job, load_config
    from studio.commands.preprocess import run_preprocess

    run_dir = tmp_path_factory.mktemp("preprocess")
    cfg = finalize_job(load_config(music_config(songs_dir, run_dir), []))
    assert run_preprocess(cfg, run_dir) == 0
    return run_dir


@pytest.fixture(scope="session")
def trained_run(preprocessed, songs_dir, tmp_path_factory) -> Path:
    """4 training steps on the preprocessed dataset folder itself (data.path = the tensor folder)."""
    from studio.config import finalize_job, load_config
    from studio.commands.train import run_training

    run_dir = tmp_path_factory.mktemp("train")
    cfg = finalize_job(load_config(music_config(songs_dir / ".studio_cache", run_dir), []))
    assert run_training(cfg, run_dir) == 0
    return run_dir
