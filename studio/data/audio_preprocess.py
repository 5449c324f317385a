"""The song cache: one safetensors file per song (VAE latents + encoded conditions) indexed by a
`manifest.json` (`CacheManifest`, kind "audio"), built incrementally, and the dataset training reads.

Per song, part `song`:
  fingerprint  sha256 of the audio bytes and its caption / lyrics / metadata sidecars
  settings     encoder identity and dtype, model sample rate and channels, normalisation, max duration
  tensors      `target_latents` (T, D): VAE latents, 25 frames per second on ACE-Step 1.5;
               `encoder_hidden_states` (L, H): the condition encoder's packed text + lyrics + timbre states
               (padding removed); `meta` in the manifest entry: caption, lyrics, seconds, frames, ...

A folder that holds such a `manifest.json` is a preprocessed dataset: `data.path` may point at it
directly (FIELDS D52). Otherwise `data.path` is a folder of songs and the cache lives in `data.cache_dir`
(default `<data.path>/.studio_cache`); training refreshes it first, so only new or changed songs are
encoded. `python -m studio preprocess CONFIG` builds it as a job of its own (progress.jsonl).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from studio.data.audio import AudioProblem, Song, find_songs, load_song
from studio.data.dataset import TrainingData
from studio.data.image_source import DataError, resolve_data_path
from studio.data.manifest import MANIFEST_NAME, CacheManifest, CacheReport, Want, read_tensors
from studio.data.scan import Finding
from studio.runfolder.events import Event

log = logging.getLogger("studio.data")
CACHE_KIND = "audio"
SONG = "song"
CACHE_FOLDER = ".studio_cache"
ENCODING_VERSION = 1  # bump when the way songs are encoded changes, to invalidate old caches
LISTED_IN_EVENT = 200


def is_song_cache(folder: Path) -> bool:
    """True when `folder` is a preprocessed dataset (its manifest is a song cache)."""
    try:
        return json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8")).get("kind") == CACHE_KIND
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def cache_dir_for(cfg, source: str = "train") -> tuple[Path, Path | None]:
    """(cache folder, folder of songs or None when the dataset is already preprocessed)."""
    path = cfg.data.eval_path if source == "eval" else cfg.data.path
    if not path:
        raise DataError(f"data.{'eval_path' if source == 'eval' else 'path'}: set a folder of songs or a "
                        "preprocessed dataset folder (with manifest.json)")
    folder = resolve_data_path(path)
    if is_song_cache(folder):
        return folder, None
    if source == "train" and cfg.data.cache_dir:
        return Path(cfg.data.cache_dir).expanduser().resolve(), folder
    return folder / CACHE_FOLDER, folder


@dataclass
class RefreshResult:
    root: Path
    before: CacheReport
    encoded: int = 0
    bad: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # songs the cache now serves, in folder order


class SongCache:
    """The cache of one folder of songs under the current encoder and audio settings."""

    def __init__(self, root: Path, songs_folder: Path, settings: dict):
        self.root, self.folder, self.settings = Path(root), Path(songs_folder), settings
        self.manifest = CacheManifest(self.root, CACHE_KIND)

    def wanted(self, songs: list[Song]) -> dict[str, dict[str, Want]]:
        return {s.key: {SONG: Want(s.fingerprint, self.settings)} for s in songs}

    def refresh(self, family, on_progress=None) -> RefreshResult:
        """Encode what is missing or stale, drop entries of songs that are gone; every unusable song is
        returned in `bad` with its reason (it never enters the cache)."""
        songs, bad = find_songs(self.folder, skip=(self.root,))
        wanted = self.wanted(songs)
        result = RefreshResult(self.root, self.manifest.report(wanted), bad=bad)
        result.notes = [Finding(s.path, n) for s in songs for n in s.notes]
        todo = [s for s in songs if self.manifest.part_state(s.key, SONG, wanted[s.key][SONG])[0] != "fresh"]
        fmt = family.audio_format()
        for done, song in enumerate(todo, start=1):
            try:
                audio, info = load_song(song.path, fmt)
            except AudioProblem as err:
                result.bad.append(Finding(song.path, str(err)))
                self.manifest.entries.pop(song.key, None)
                continue
            tensors = family.encode_song(audio, song.caption, song.lyrics, song.meta, info["seconds"])
            self.manifest.put(song.key, song.path.name, SONG, wanted[song.key][SONG], tensors)
            frames = int(tensors["target_latents"].shape[0])
            self.manifest.entries[song.key]["meta"] = {"caption": song.caption, "lyrics": song.lyrics,
                                                       **song.meta, **info, "frames": frames}
            result.encoded += 1
            if on_progress is not None:
                on_progress(done, len(todo))
        failed = {f.path for f in result.bad}
        self.manifest.keep_only({s.key for s in songs if s.path not in failed})
        self.manifest.save()
        self.manifest.collect_garbage((SONG,))
        result.keys = [s.key for s in songs if s.key in self.manifest.entries]
        return result


def song_settings(family) -> dict:
    """Everything that changes a song's tensors besides the song itself."""
    fmt = family.audio_format()
    return {"encoder": family.encoder_identity(), "dtype": str(family.dtype), "sample_rate": fmt.sample_rate,
            "channels": fmt.channels, "normalize": fmt.normalize, "max_seconds": fmt.max_seconds,
            "version": ENCODING_VERSION}


def refresh_song_cache(cfg, family, source: str = "train", on_progress=None) -> RefreshResult:
    """The cache of `data.path` (or `data.eval_path`), refreshed; a preprocessed folder is used as is."""
    root, folder = cache_dir_for(cfg, source)
    if folder is None:
        manifest = CacheManifest(root, CACHE_KIND)
        result = RefreshResult(root, CacheReport(fresh=len(manifest.entries)), keys=sorted(manifest.entries))
        want = song_settings(family)
        stored = [e["parts"][SONG]["settings"] for e in manifest.entries.values()]
        for source in sorted({s["source"] for s in stored if "source" in s}):  # converted from another trainer
            result.notes.append(Finding(root, f"converted from {source}: its tensors are used as they are, so they "
                                        "must come from this ACE-Step model (same VAE and condition encoder)"))
        differing = sorted({k for s in stored if "source" not in s for k, v in s.items() if want.get(k) != v})
        if differing:
            result.notes.append(Finding(root, f"preprocessed with other settings ({', '.join(differing)}) than "
                                        "this run's model and data settings; re-run preprocessing to match"))
        return result
    return SongCache(root, folder, song_settings(family)).refresh(family, on_progress)


def report_findings(result: RefreshResult, on_bad_file: str, progress=None) -> None:
    """Log every unusable song by path (and in progress.jsonl); `data.on_bad_file=error` refuses."""
    for finding in result.notes:
        log.warning("%s: %s", finding.path, finding.reason)
    for finding in result.bad:
        log.warning("unusable song %s: %s", finding.path, finding.reason)
    if progress is not None:
        progress.event(Event.SCAN, songs=len(result.keys), bad=len(result.bad),
                       bad_files=[{"path": str(f.path), "reason": f.reason} for f in result.bad[:LISTED_IN_EVENT]],
                       warning_files=[{"path": str(f.path), "reason": f.reason}
                                      for f in result.notes[:LISTED_IN_EVENT]])
    if result.bad and on_bad_file == "error":
        listing = "\n".join(f"  {f.path}: {f.reason}" for f in result.bad)
        raise DataError(f"data.on_bad_file=error: {len(result.bad)} unusable song(s); fix or remove them, or "
                        f"set data.on_bad_file=skip to train on the rest:\n{listing}")


# ---- the training dataset -----------------------------------------------------------------------
class SongLatentDataset(TrainingData):
    """Cached songs; item = (index, epoch) from EpochSampler (or a plain index for evaluation).
    With `chunk_frames` > 0 each item is a random window of that many latent frames, drawn from
    (seed, epoch, index) only, so a resumed run sees the same windows."""

    def __init__(self, root: Path, keys: list[str], chunk_frames: int, seed: int):
        self.manifest = CacheManifest(root, CACHE_KIND)
        self.keys, self.chunk_frames, self.seed = list(keys), chunk_frames, seed

    def __len__(self) -> int:
        return len(self.keys)

    def window_rng(self, index: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index])

    def __getitem__(self, item) -> dict:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        key = self.keys[index]
        tensors = read_tensors(self.manifest.tensor_file(key, SONG))
        latents = tensors["target_latents"]  # (T, D)
        rng = self.window_rng(index, epoch)
        if 0 < self.chunk_frames < latents.shape[0]:
            start = int(rng.integers(0, latents.shape[0] - self.chunk_frames + 1))
            latents = latents[start: start + self.chunk_frames]
        # `crop_at`: where this song's window sits if the batch cuts it further to its shortest song.
        return {"target_latents": latents, "encoder_hidden_states": tensors["encoder_hidden_states"],
                "crop_at": float(rng.random()), "key": key}

    def fingerprint(self) -> str:
        from studio.data.manifest import sha256_text, stable_json

        parts = [[k, self.manifest.entries[k]["parts"][SONG]["fingerprint"]] for k in self.keys]
        return sha256_text(stable_json(parts))


def split_keys(keys: list[str], ratio: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, eval) by a seeded shuffle; at least one song on each side when both are asked for."""
    if ratio <= 0 or len(keys) < 2:
        return list(keys), []
    order = np.random.default_rng(seed).permutation(len(keys))
    n_eval = min(len(keys) - 1, max(1, round(ratio * len(keys))))
    held = {keys[i] for i in order[:n_eval]}
    return [k for k in keys if k not in held], [k for k in keys if k in held]


def collate_songs(items: list[dict]) -> dict:
    """Batch of songs: latents cut to the shortest (B, T, D); encoder states zero-padded (B, L, H) with
    `encoder_attention_mask` (B, L). ACE-Step's DiT takes no padding mask, as in its pipeline."""
    frames = min(it["target_latents"].shape[0] for it in items)
    latents = []
    for it in items:
        extra = it["target_latents"].shape[0] - frames
        start = int(it["crop_at"] * (extra + 1)) if extra else 0
        latents.append(it["target_latents"][start: start + frames])
    length = max(it["encoder_hidden_states"].shape[0] for it in items)
    states = torch.zeros(len(items), length, items[0]["encoder_hidden_states"].shape[-1])
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for i, it in enumerate(items):
        n = it["encoder_hidden_states"].shape[0]
        states[i, :n], mask[i, :n] = it["encoder_hidden_states"], True
    return {"target_latents": torch.stack(latents), "encoder_hidden_states": states,
            "encoder_attention_mask": mask, "keys": [it["key"] for it in items]}
