"""Sample generation shared by the trainer (during training) and the Samples tab.

Each sample is written as `samples/step-<step>_p<i>.<ext>` with a `.json` beside it holding exactly
what produced it (prompt, seed, steps, guidance, size, scheduler, step).
"""
from __future__ import annotations

import json
import logging
import traceback
import wave
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from studio.families.base import Sample
from studio.runfolder.events import Event

log = logging.getLogger("studio.sampling")
SUFFIX = {"image": ".png", "audio": ".wav", "text": ".txt"}


def write_sample(folder: Path, stem: str, sample: Sample) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}{SUFFIX[sample.kind]}"
    if sample.kind == "image":
        sample.data.save(path)
    elif sample.kind == "audio":
        write_wav(path, *sample.data)
    else:
        path.write_text(str(sample.data), encoding="utf-8")
    (folder / f"{stem}.json").write_text(json.dumps({**sample.meta, "file": path.name}, indent=2), "utf-8")
    return path


def write_wav(path: Path, waveform, sample_rate: int) -> None:
    """(channels, samples) float in [-1, 1] -> 16-bit PCM wav (stdlib only)."""
    audio = np.asarray(waveform, dtype=np.float32)
    audio = audio[None] if audio.ndim == 1 else audio
    pcm = (np.clip(audio, -1.0, 1.0).T * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(audio.shape[0])
        wav.setsampwidth(2)
        wav.setframerate(int(sample_rate))
        wav.writeframes(pcm.tobytes())


def list_samples(run_dir: Path) -> list[dict]:
    """Every sample of a run with its metadata, oldest step first (for the Samples tab)."""
    out = []
    for meta_path in sorted((Path(run_dir) / "samples").glob("*.json")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        meta["path"] = str(meta_path.with_name(meta.get("file", "")))
        out.append(meta)
    return sorted(out, key=lambda m: (m.get("step", 0), m["path"]))


@contextmanager
def sampling_weights(t):
    """The network in eval mode with the weights samples show: the current ones, or the EMA weights
    when kept (as the final adapter will hold). Training mode and weights come back afterwards."""
    module = t.family.trainable_module()
    params = t.adapter.trainable_params()
    try:
        module.eval()
        if t.ema is not None:
            t.ema.store(params)
            t.ema.copy_to(params)
        yield
    finally:
        if t.ema is not None:
            t.ema.restore(params)
        module.train()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def render_during_training(t, run_dir: Path, step: int, progress) -> None:
    """Render the configured prompts with the current (or EMA) weights. A failure is a warning in
    progress.jsonl, never the end of the run."""
    prompts = t.cfg.sampling.prompts
    if not prompts:
        return
    try:
        with sampling_weights(t):
            samples = t.family.sample(prompts, step)
        for i, sample in enumerate(samples):
            path = write_sample(Path(run_dir) / "samples", f"step-{step:06d}_p{i}", sample)
            progress.event(Event.SAMPLE, step=step, path=str(path), prompt=sample.meta.get("prompt", ""))
    except Exception as err:  # noqa: BLE001 - any sampling failure must not end training
        log.warning("sampling failed at step %d: %s", step, err)
        log.debug(traceback.format_exc())
        progress.event(Event.WARNING, step=step, message=f"sampling failed: {err}")
