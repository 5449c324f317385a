"""The family's training objective per variant, chunk windows, and the incremental song cache."""
from __future__ import annotations

import shutil

import pytest
import torch

from studio.config import load_config
from studio.config.sections.music import music_settings
from tests.music.conftest import music_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def family(preprocessed, songs_dir, tmp_path_factory):
    from studio.families.acestep import AceStepFamily

    cfg = load_config(music_config(songs_dir / ".studio_cache", tmp_path_factory.mktemp("fam")), [])
    fam = AceStepFamily(cfg, torch.device("cpu"), torch.float32)
    fam.load()
    return fam


def with_variant(family, **loss):
    """The family trained as another variant (what `load()` derives from the config)."""
    variant = loss.pop("variant")
    cfg = load_config(music_config("unused", "unused", model={"variant": variant}, loss=loss), [])
    family.cfg, family.music = cfg, music_settings(cfg)
    return family


def batch_of(family, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    width = family.transformer.config.hidden_size
    return {"target_latents": torch.randn(2, 20, 8, generator=gen),
            "encoder_hidden_states": torch.randn(2, 7, width, generator=gen)}


def loss_of(family, batch, seed=0) -> float:
    with torch.no_grad():
        return float(family.loss(batch, torch.Generator().manual_seed(seed)))


def test_turbo_trains_at_exactly_its_inference_timesteps(family):
    from diffusers import AceStepPipeline

    from studio.families.acestep import TURBO_TIMESTEPS

    schedule = AceStepPipeline._get_timestep_schedule(None, num_inference_steps=8, shift=3.0)
    assert torch.allclose(TURBO_TIMESTEPS, schedule)
    drawn = with_variant(family, variant="turbo").sample_timesteps(400, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == set(TURBO_TIMESTEPS.tolist())


def test_base_draws_continuous_logit_normal_timesteps(family):
    drawn = with_variant(family, variant="base").sample_timesteps(4000, torch.Generator().manual_seed(0))
    assert len(set(drawn.tolist())) > 3000 and 0 < drawn.min() and drawn.max() < 1
    assert float(drawn.median()) == pytest.approx(float(torch.sigmoid(torch.tensor(-0.4))), abs=0.02)


def test_cfg_dropout_replaces_the_condition_for_base_only(family):
    a, b = batch_of(family, 1), batch_of(family, 1)
    # Another prompt, drawn from its own generator: the global RNG state depends on which tests ran
    # before, and some draws moved the tiny model's loss by less than the 1e-3 checked below.
    states = b["encoder_hidden_states"]
    b["encoder_hidden_states"] = 3.0 * torch.randn(states.shape, generator=torch.Generator().manual_seed(7)).to(states)
    # Every item dropped: the prompt no longer matters, the null condition is trained instead.
    with_variant(family, variant="base", cfg_ratio=1.0)
    assert loss_of(family, a) == pytest.approx(loss_of(family, b), rel=1e-6)
    with_variant(family, variant="base", cfg_ratio=0.0)
    assert loss_of(family, a) != pytest.approx(loss_of(family, b), rel=1e-3)
    with_variant(family, variant="turbo")  # turbo never drops, whatever happens
    assert loss_of(family, a) != pytest.approx(loss_of(family, b), rel=1e-3)


def test_min_snr_reweights_the_base_loss(family):
    batch = batch_of(family, 2)
    plain = loss_of(with_variant(family, variant="base"), batch)
    weighted = loss_of(with_variant(family, variant="base", loss_weighting="min_snr", snr_gamma=1.0), batch)
    assert weighted < plain  # min(SNR, 1) / SNR <= 1 for every timestep


def test_attention_type_picks_self_or_cross_attention_layers(family):
    from studio.adapters.targets import resolve_targets

    for kind, expected in (("self", "self_attn"), ("cross", "cross_attn")):
        cfg = load_config(music_config("x", "x", adapter={"attention_type": kind,
                                                          "target_modules": "q_proj v_proj gate_proj"}), [])
        spec = resolve_targets(family.transformer, cfg.adapter, family.default_targets(), family.attention_scopes())
        attention = sorted(m for m in spec.modules if "attn" in m)
        assert attention == [f"layers.{i}.{expected}.{p}" for i in (0, 1) for p in ("to_q", "to_v")]
        assert {m for m in spec.modules if "mlp" in m} == {"layers.0.mlp.gate_proj", "layers.1.mlp.gate_proj"}


def test_chunk_windows_depend_only_on_seed_epoch_and_song(family, songs_dir):
    from studio.data.audio_preprocess import SongLatentDataset

    root = songs_dir / ".studio_cache"
    data = SongLatentDataset(root, ["major_song.wav", "minor_song.flac"], chunk_frames=10, seed=3)
    again = SongLatentDataset(root, ["major_song.wav", "minor_song.flac"], chunk_frames=10, seed=3)
    first = data[(0, 0)]["target_latents"]
    assert first.shape == (10, 8) and torch.equal(first, again[(0, 0)]["target_latents"])
    windows = {tuple(data[(0, epoch)]["target_latents"][0].tolist()) for epoch in range(6)}
    assert len(windows) > 1  # a new window most epochs
    whole = SongLatentDataset(root, ["major_song.wav"], chunk_frames=0, seed=3)[0]
    assert whole["target_latents"].shape == (50, 8)


def test_song_cache_reencodes_only_what_changed(family, songs_dir, tmp_path):
    from studio.data.audio_preprocess import refresh_song_cache

    folder = tmp_path / "songs"
    shutil.copytree(songs_dir, folder)
    family.cfg = load_config(music_config(folder, tmp_path / "out"), [])
    family.music = music_settings(family.cfg)
    unchanged = refresh_song_cache(family.cfg, family)
    assert unchanged.encoded == 0 and unchanged.keys == ["major_song.wav", "minor_song.flac"]
    assert {f.path.name for f in unchanged.bad} == {"corrupt.mp3", "silent.wav", "short.wav"}
    (folder / "minor_song.txt").write_text("slow minor chords, now with strings")
    (folder / "major_song.wav").unlink()
    changed = refresh_song_cache(family.cfg, family)
    assert changed.encoded == 1 and changed.before.stale == 1 and changed.before.removed == 1
    assert changed.keys == ["minor_song.flac"]
    assert len(list((folder / ".studio_cache").rglob("*.safetensors"))) == 1  # the old files are gone
