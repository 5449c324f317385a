"""Songs on disk: find them with their sidecars, decode, check, and bring them to the model's format.

A dataset folder holds audio files (wav, flac, mp3, ogg; sub-folders too) and, next to each, optional
sidecars named after it:

    song.wav          the audio
    song.txt          caption (style, instruments, mood); `song.caption.txt` also works
    song.lyrics.txt   lyrics (`[verse]`, `[chorus]` tags); missing = "[Instrumental]"
    song.json         optional metadata: {"caption", "lyrics", "bpm", "key", "time_signature", "language"}
                      (`keyscale` / `timesignature` spellings accepted; text files win over JSON fields)

A song is unusable (reported with its path and left out) when it cannot be decoded, holds no audio, is
shorter than `data.min_duration`, or is silent (peak below -60 dBFS). Usable songs are turned into
the model's layout: stereo (mono is duplicated, extra channels dropped), resampled to the model's rate
with a polyphase filter, cut to `data.max_duration`, then loudness-normalised per `data.normalize`.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from studio.data.scan import Finding

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
SILENCE_DBFS = -60.0  # a file whose loudest sample is below this is treated as silent
PEAK_TARGET_DBFS = -1.0  # `peak` normalisation target, and the ceiling after `lufs`
LUFS_TARGET = -14.0  # integrated loudness of `lufs` normalisation (streaming level)
INSTRUMENTAL = "[Instrumental]"  # ACE-Step's lyrics for songs without vocals
_META_ALIASES = {"bpm": ("bpm",), "keyscale": ("keyscale", "key", "key_scale"),
                 "timesignature": ("timesignature", "time_signature", "timesig"),
                 "language": ("language", "vocal_language", "lang")}


class AudioProblem(ValueError):
    """Why a song cannot be used (the message is the reason shown next to its path)."""


@dataclass
class Song:
    path: Path
    key: str  # path relative to the dataset folder: the song's name in the cache manifest
    caption: str
    lyrics: str
    meta: dict  # bpm (int), keyscale, timesignature, language: only what the sidecars give
    fingerprint: str  # sha256 over the audio bytes and the sidecar texts
    notes: list[str] = field(default_factory=list)


@dataclass
class AudioFormat:
    """What the model expects and what the config asks of preprocessing."""

    sample_rate: int
    channels: int = 2
    normalize: str = "none"  # none | peak | lufs
    max_seconds: float = 0.0  # 0 = no limit
    min_seconds: float = 5.0


# ---- finding songs ----------------------------------------------------------------------------------
def find_songs(folder: Path, skip: tuple[Path, ...] = ()) -> tuple[list[Song], list[Finding]]:
    """Every audio file under `folder` (sorted, hidden and `skip` folders left out) with its sidecars."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.path: {folder} is not a folder of songs")
    skipped = [Path(s).resolve() for s in skip]
    songs, bad = [], []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if (path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file()
                or any(part.startswith(".") for part in rel.parts)
                or any(s == path.resolve() or s in path.resolve().parents for s in skipped)):
            continue
        try:
            songs.append(read_song_entry(path, rel.as_posix()))
        except AudioProblem as err:
            bad.append(Finding(path, str(err)))
    return songs, bad


def read_song_entry(path: Path, key: str) -> Song:
    """The song's sidecars and fingerprint (the audio itself is decoded later, only when needed)."""
    stem = path.with_suffix("")
    meta_file, notes = stem.with_suffix(".json"), []
    meta: dict = {}
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AudioProblem(f"metadata file {meta_file.name} is not valid JSON: {err}") from err
        if not isinstance(meta, dict):
            raise AudioProblem(f"metadata file {meta_file.name} must hold a JSON object")
    caption = _read_text(stem, (".txt", ".caption.txt")) or str(meta.get("caption") or "").strip()
    if not caption:
        caption = path.stem.replace("_", " ").replace("-", " ").strip()
        notes.append(f"no caption file ({path.stem}.txt): the file name '{caption}' is used")
    lyrics = _read_text(stem, (".lyrics.txt", "_lyrics.txt")) or str(meta.get("lyrics") or "").strip()
    digest = hashlib.sha256(path.read_bytes())
    clean = _clean_meta(meta, path)
    digest.update(json.dumps([caption, lyrics, clean], sort_keys=True).encode("utf-8"))
    return Song(path, key, caption, lyrics or INSTRUMENTAL, clean, digest.hexdigest(), notes)


def _read_text(stem: Path, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        candidate = stem.parent / (stem.name + suffix)
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8", errors="replace").strip()
    return ""


def _clean_meta(meta: dict, path: Path) -> dict:
    out = {}
    for name, aliases in _META_ALIASES.items():
        value = next((meta[a] for a in aliases if meta.get(a) not in (None, "")), None)
        if value is None:
            continue
        if name == "bpm":
            try:
                value = int(round(float(value)))
            except (TypeError, ValueError) as err:
                raise AudioProblem(f"metadata 'bpm' must be a number (got {value!r})") from err
        out[name] = value if name == "bpm" else str(value).strip()
    if "timesignature" in out:  # ACE-Step writes beats per bar: "4/4" -> "4"
        out["timesignature"] = out["timesignature"].split("/")[0].strip()
    return out


# ---- decoding and shaping -------------------------------------------------------------------------
def decode(path: Path) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the file's sample rate; AudioProblem when it cannot be read."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - libsndfile raises several types for broken files
        # libsndfile reports an unrecognised file as "does not exist": say what it means here.
        detail = getattr(err, "error_string", None) or str(err)
        raise AudioProblem(f"cannot be decoded: the file is corrupt or not really {path.suffix.lower()} audio "
                           f"(libsndfile: {detail})") from err
    if data.size == 0 or rate <= 0:
        raise AudioProblem("holds no audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioProblem("holds invalid samples (NaN or infinite values)")
    return np.ascontiguousarray(data.T), int(rate)


def peak_dbfs(audio: np.ndarray) -> float:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def check_song(audio: np.ndarray, rate: int, fmt: AudioFormat) -> float:
    """Raise AudioProblem for a too short or silent song; returns its duration in seconds."""
    seconds = audio.shape[-1] / rate
    if seconds < fmt.min_seconds:
        raise AudioProblem(f"too short: {seconds:.2f} s (data.min_duration is {fmt.min_seconds:g} s)")
    level = peak_dbfs(audio)
    if level < SILENCE_DBFS:
        shown = "-inf" if math.isinf(level) else f"{level:.1f}"
        raise AudioProblem(f"silent: its loudest sample is {shown} dBFS (below {SILENCE_DBFS:g} dBFS)")
    return seconds


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Mono -> duplicated; more channels than wanted -> the first ones (front left/right in every
    standard layout)."""
    if audio.shape[0] == channels:
        return audio
    if audio.shape[0] == 1:
        return np.repeat(audio, channels, axis=0)
    if audio.shape[0] > channels:
        return audio[:channels]
    return np.concatenate([audio, np.repeat(audio[-1:], channels - audio.shape[0], axis=0)])


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling with scipy's anti-aliasing FIR (`resample_poly`): exact ratio, no drift."""
    if rate == target:
        return audio
    from scipy.signal import resample_poly

    ratio = Fraction(target, rate)
    return resample_poly(audio, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def normalize_loudness(audio: np.ndarray, rate: int, mode: str) -> tuple[np.ndarray, float]:
    """`peak`: loudest sample at -1 dBFS. `lufs`: -14 LUFS integrated (ITU-R BS.1770 via pyloudnorm),
    pulled down further if that would push a peak over -1 dBFS. Returns the audio and the gain in dB."""
    if mode == "none":
        return audio, 0.0
    ceiling = 10.0 ** (PEAK_TARGET_DBFS / 20.0)
    peak = float(np.max(np.abs(audio)))
    if mode == "peak":
        gain = ceiling / peak
    elif mode == "lufs":
        try:
            import pyloudnorm
        except ImportError as err:
            raise RuntimeError("data.normalize 'lufs' needs the pyloudnorm package (pip install pyloudnorm); "
                               "or use 'peak'") from err
        loudness = pyloudnorm.Meter(rate).integrated_loudness(audio.T.astype(np.float64))  # (N, C)
        if not math.isfinite(loudness):
            raise AudioProblem("too quiet to measure its loudness (LUFS); it is effectively silent")
        gain = min(10.0 ** ((LUFS_TARGET - loudness) / 20.0), ceiling / peak)
    else:
        raise ValueError(f"data.normalize: '{mode}' is not one of none, peak, lufs")
    return (audio * gain).astype(np.float32), 20.0 * math.log10(gain)


def load_song(path: Path, fmt: AudioFormat) -> tuple[np.ndarray, dict]:
    """Decode, check and shape one song: (channels, samples) float32 at `fmt.sample_rate`, and what was
    done to it (source rate and channels, duration, cut, gain)."""
    audio, rate = decode(path)
    seconds = check_song(audio, rate, fmt)
    info = {"source_rate": rate, "source_channels": int(audio.shape[0]), "source_seconds": round(seconds, 3)}
    if fmt.max_seconds and seconds > fmt.max_seconds:
        audio = audio[:, : int(fmt.max_seconds * rate)]  # cut before resampling: less work
        info["cut_to_seconds"] = fmt.max_seconds
    audio = resample(to_channels(audio, fmt.channels), rate, fmt.sample_rate)
    audio, gain = normalize_loudness(audio, fmt.sample_rate, fmt.normalize)
    info.update(seconds=round(audio.shape[-1] / fmt.sample_rate, 3), gain_db=round(gain, 2))
    return audio, info


# ---- the offline demo: short synthetic songs (`demo:songs`) -------------------------------------------
DEMO_SONGS = (  # (name, root note in Hz, major?, bpm, instrumental?)
    ("bright_major_pulse", 261.63, True, 120, False),
    ("slow_minor_drone", 220.00, False, 70, True),
    ("fast_major_arpeggio", 293.66, True, 150, True),
    ("mellow_minor_waltz", 196.00, False, 90, False),
)


def synth_song(root_hz: float, major: bool, bpm: int, seconds: float, rate: int, seed: int) -> np.ndarray:
    """A chord progression (I-IV-V-I or i-iv-v-i) of decaying harmonic tones on each beat, with a noise
    hi-hat: (2, N) float32, left/right slightly detuned so the stereo field is not empty."""
    rng = np.random.default_rng(seed)
    third = 4 if major else 3
    chords = [(0, third, 7), (5, 5 + third, 12), (7, 7 + third, 14), (0, third, 7)]
    beat = 60.0 / bpm
    n = int(seconds * rate)
    t = np.arange(n) / rate
    out = np.zeros((2, n))
    for i in range(int(seconds / beat) + 1):
        start = int(i * beat * rate)
        if start >= n:
            break
        span = t[: n - start]
        env = np.exp(-3.0 * span / beat)
        for semitone in chords[(i // 4) % 4]:
            f = root_hz * 2.0 ** (semitone / 12.0)
            for ch, detune in enumerate((1.0, 1.003)):
                tone = np.sin(2 * np.pi * f * detune * span) + 0.3 * np.sin(4 * np.pi * f * detune * span)
                out[ch, start:] += 0.12 * env * tone
        hat = rng.standard_normal(min(n - start, int(0.03 * rate))) * 0.05
        out[:, start: start + hat.size] += hat
    return (out / max(1.0, np.abs(out).max() / 0.8)).astype(np.float32)


def write_demo_songs(out_dir: Path, seconds: float = 2.5, rate: int = 24_000) -> Path:
    """Four short songs with caption, lyrics and metadata sidecars, at 24 kHz (so preprocessing resamples).
    Deterministic: the same bytes every time."""
    import soundfile as sf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, (name, root, major, bpm, instrumental) in enumerate(DEMO_SONGS):
        mode = "major" if major else "minor"
        audio = synth_song(root, major, bpm, seconds, rate, seed=i)
        sf.write(str(out_dir / f"{name}.wav"), audio.T, rate, subtype="PCM_16")
        (out_dir / f"{name}.txt").write_text(
            f"synthetic {mode} chords, {'fast' if bpm > 110 else 'slow'} tempo, soft hi-hat\n", encoding="utf-8")
        if not instrumental:
            (out_dir / f"{name}.lyrics.txt").write_text("[verse]\nla la la, tiny song\n", encoding="utf-8")
        (out_dir / f"{name}.json").write_text(json.dumps({"bpm": bpm, "key": f"{'C' if major else 'A'} {mode}",
                                                          "time_signature": "4/4", "language": "en"}),
                                              encoding="utf-8")
    return out_dir
