"""End to end on CPU: synthetic songs -> preprocess -> 4 training steps -> AceStepPipeline with the adapter
sounds different; the ComfyUI file holds the same adapter; samples and inference settings are written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from studio.data.manifest import MANIFEST_NAME
from tests.conftest import read_progress
from tests.music.conftest import BAD

pytestmark = pytest.mark.slow


def test_preprocessing_names_each_broken_file_and_writes_one_file_per_song(preprocessed, songs_dir):
    records = read_progress(preprocessed)
    scan = next(r for r in records if r.get("event") == "scan")
    reasons = {f["path"]: f["reason"] for f in scan["bad_files"]}
    for name, reason in BAD.items():
        assert reason in reasons[str(songs_dir / name)]
    assert records[-1]["event"] == "done" and records[-1]["songs"] == 2 and records[-1]["bad_files"] == 3
    cache = songs_dir / ".studio_cache"
    manifest = json.loads((cache / MANIFEST_NAME).read_text())
    assert manifest["kind"] == "audio" and set(manifest["entries"]) == {"major_song.wav", "minor_song.flac"}
    files = sorted(cache.rglob("*.safetensors"))
    assert len(files) == 2
    meta = manifest["entries"]["major_song.wav"]["meta"]
    # 2 s at 25 latent frames per second; the 24 kHz stereo source was resampled to 48 kHz
    assert meta["frames"] == 50 and meta["source_rate"] == 24_000 and meta["bpm"] == 120


def test_trained_adapter_changes_the_generated_audio(trained_run, tiny_acestep):
    from diffusers import AceStepPipeline

    assert read_progress(trained_run)[-1]["event"] == "done"
    pipe = AceStepPipeline.from_pretrained(str(tiny_acestep))
    pipe.set_progress_bar_config(disable=True)

    def generate(output_type="pt"):
        return pipe("bright major chords", lyrics="la la", audio_duration=0.3, num_inference_steps=8, shift=3.0,
                    guidance_scale=1.0, generator=torch.Generator().manual_seed(0), output_type=output_type).audios

    audio_before, latents_before = generate(), generate("latent")
    pipe.load_lora_weights(str(trained_run))  # the run folder as it is, no file name given
    audio_after, latents_after = generate(), generate("latent")
    assert audio_before.shape == audio_after.shape == (1, 2, 15_360)  # 8 latent frames x 1920 samples
    # The tiny random VAE decoder barely depends on its input (~1 % for unrelated latents), so the audio
    # difference is small in absolute terms; the latents it decodes differ by far more.
    assert (audio_after - audio_before).abs().max() > 2e-5
    assert (latents_after - latents_before).norm() > 0.02 * latents_before.norm()
    pipe.unload_lora_weights()
    assert torch.allclose(generate("latent"), latents_before, atol=1e-6)  # the difference is the adapter's


def test_comfyui_file_holds_the_same_adapter(trained_run, tiny_acestep):
    from diffusers import AceStepPipeline
    from safetensors.torch import load_file

    comfy = next(trained_run.glob("*_kohya.safetensors"))
    keys = list(load_file(str(comfy)))
    assert all(k.startswith("base_model.model.layers.") for k in keys)
    assert any(".self_attn.q_proj.lora_A.weight" in k for k in keys) and not any("to_q" in k for k in keys)
    outputs = []
    for weight_name in ("adapter_model.safetensors", comfy.name):
        pipe = AceStepPipeline.from_pretrained(str(tiny_acestep))
        pipe.load_lora_weights(str(trained_run), weight_name=weight_name)
        gen = torch.Generator().manual_seed(1)
        latents, states = torch.randn(1, 12, 8, generator=gen), torch.randn(1, 5, 32, generator=gen)
        context = torch.cat([pipe.condition_encoder.silence_latent[:, :12], torch.ones(1, 12, 8)], dim=-1)
        t = torch.tensor([0.7])
        with torch.no_grad():
            outputs.append(pipe.transformer(latents, t, t, states, context).sample)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)


def test_samples_and_inference_settings_are_written(trained_run):
    import soundfile as sf

    settings = json.loads((trained_run / "inference_settings.json").read_text())
    assert settings == {"variant": "turbo", "base_variant": "turbo", "shift": 3.0, "num_inference_steps": 8,
                        "guidance_scale": 1.0}
    wav = next((trained_run / "samples").glob("*.wav"))
    audio, rate = sf.read(str(wav))
    meta = json.loads(wav.with_suffix(".json").read_text())
    assert rate == 48_000 and audio.shape == (15_360, 2) and np.abs(audio).max() > 0.1
    assert meta["steps"] == 8 and meta["shift"] == 3.0 and meta["lyrics"] == "la la"
    saved = [r for r in read_progress(trained_run) if r.get("event") == "saved"]
    assert saved and saved[0]["verified"] is True and saved[0]["loader"] == "diffusers load_lora_weights"
