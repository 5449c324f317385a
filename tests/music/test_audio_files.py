"""Reading songs: sidecars, resampling, channels, loudness, and every unusable file named with its reason."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from studio.data.audio import (AudioFormat, AudioProblem, find_songs, load_song, normalize_loudness, peak_dbfs,
                               resample, to_channels)
from tests.music.conftest import BAD, MIN_SECONDS, write_songs

FMT = AudioFormat(sample_rate=48_000, channels=2, min_seconds=MIN_SECONDS)


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def test_sidecars_give_caption_lyrics_and_metadata(tmp_path):
    songs, bad = find_songs(write_songs(tmp_path))
    by_key = {s.key: s for s in songs}
    assert set(by_key) == {"major_song.wav", "minor_song.flac", *BAD}
    major = by_key["major_song.wav"]
    assert major.caption == "bright major chords, fast tempo" and major.lyrics == "[verse]\nla la la"
    assert major.meta == {"bpm": 120, "keyscale": "C major", "timesignature": "4"}
    assert by_key["minor_song.flac"].lyrics == "[Instrumental]"
    assert bad == []
    fingerprint = major.fingerprint
    (tmp_path / "major_song.txt").write_text("a new caption")
    assert {s.key: s for s in find_songs(tmp_path)[0]}["major_song.wav"].fingerprint != fingerprint


def test_broken_metadata_is_named(tmp_path):
    sf.write(str(tmp_path / "a.wav"), tone(440, 2.0, 16_000), 16_000)
    (tmp_path / "a.json").write_text("{not json")
    songs, bad = find_songs(tmp_path)
    assert songs == [] and bad[0].path == tmp_path / "a.wav" and "not valid JSON" in bad[0].reason


@pytest.mark.parametrize("name, reason", sorted(BAD.items()))
def test_unusable_files_are_refused_with_their_reason(tmp_path, name, reason):
    write_songs(tmp_path)
    with pytest.raises(AudioProblem, match=reason):
        load_song(tmp_path / name, FMT)


def test_resampling_keeps_pitch_and_length():
    audio = tone(1000.0, 1.0, 24_000)[None]
    out = resample(audio, 24_000, 48_000)
    assert out.shape == (1, 48_000)
    spectrum = np.abs(np.fft.rfft(out[0]))
    assert abs(np.argmax(spectrum) * 48_000 / out.shape[1] - 1000.0) <= 1.0
    assert resample(audio, 24_000, 24_000) is audio


def test_channels_become_stereo():
    mono = np.ones((1, 10), np.float32)
    assert to_channels(mono, 2).shape == (2, 10)
    surround = np.arange(60, dtype=np.float32).reshape(6, 10)
    assert np.array_equal(to_channels(surround, 2), surround[:2])


def test_peak_and_lufs_normalisation():
    audio = np.stack([tone(440, 3.0, 48_000, 0.05)] * 2)
    peaked, gain = normalize_loudness(audio, 48_000, "peak")
    assert peak_dbfs(peaked) == pytest.approx(-1.0, abs=1e-3) and gain > 20
    import pyloudnorm

    loud, _ = normalize_loudness(audio, 48_000, "lufs")
    assert pyloudnorm.Meter(48_000).integrated_loudness(loud.T.astype(np.float64)) == pytest.approx(-14.0, abs=0.2)
    assert peak_dbfs(loud) <= -1.0 + 1e-3


def test_load_song_shapes_a_mono_24k_file_into_48k_stereo(tmp_path):
    sf.write(str(tmp_path / "m.flac"), tone(440, 3.0, 24_000, 0.1), 24_000)
    fmt = AudioFormat(48_000, 2, normalize="peak", max_seconds=2.0, min_seconds=1.0)
    audio, info = load_song(tmp_path / "m.flac", fmt)
    assert audio.shape == (2, 96_000) and audio.dtype == np.float32
    assert info["source_rate"] == 24_000 and info["source_channels"] == 1 and info["cut_to_seconds"] == 2.0
    assert peak_dbfs(audio) == pytest.approx(-1.0, abs=1e-2)
