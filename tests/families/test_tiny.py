"""Tiny models load through the real pipeline / Auto classes and run, offline and deterministic."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # any hub access would fail the test instead of hanging

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from studio.families import tiny  # noqa: E402
from studio.families.tiny import TINY_FAMILIES, ensure_tiny_model, write_tiny_model  # noqa: E402

PIPELINES = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "acestep": "AceStepPipeline",
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on busy shared cores two OpenMP
    threads per process spin at barriers: a 40 ms UNet step was measured at 5-10 s."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Write each family once per module; tests share the folders (writes take ~1 s each)."""
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = write_tiny_model(family, tmp_path_factory.mktemp(family) / "model")
        return cache[family]

    return get


def load_pipeline(family: str, folder: Path):
    return getattr(diffusers, PIPELINES[family]).from_pretrained(str(folder))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_unknown_family_names_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="sd15.*causal_lm"):
        write_tiny_model("sd2", tmp_path)
    with pytest.raises(ValueError, match="allowed"):
        ensure_tiny_model("nope", tmp_path)
    assert not (tmp_path / "models").exists()


def test_sd15_pipeline_runs_at_64px(written):
    folder = written("sd15")
    pipe = load_pipeline("sd15", folder)
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.sample_size == 8
    assert pipe.safety_checker is None and pipe.config.requires_safety_checker is False
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer) and pipe.tokenizer.model_max_length == 77
    sched = pipe.scheduler.config
    assert (sched.beta_schedule, sched.beta_start, sched.beta_end, sched.num_train_timesteps) == (
        "scaled_linear", 0.00085, 0.012, 1000)
    image = pipe("a photo of a cat", num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3) and (image == image).all()  # no NaN
    assert folder_bytes(folder) < 3_000_000


def test_sd15_trainer_pieces_load_and_step_fast(written):
    """The trainer reads DDPMScheduler from the same folder and trains the UNet on 8x8 latents."""
    folder = written("sd15")
    ddpm = diffusers.DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler")
    assert ddpm.config.clip_sample is False and ddpm.config.prediction_type == "epsilon"
    unet = diffusers.UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet")
    latents, text = torch.randn(2, 4, 8, 8), torch.randn(2, 77, unet.config.cross_attention_dim)
    timesteps = torch.tensor([1, 999])
    cpu_seconds = []
    for _ in range(3):
        start = time.thread_time()  # CPU time of this thread: other processes do not count
        unet(latents, timesteps, text).sample.pow(2).mean().backward()
        cpu_seconds.append(time.thread_time() - start)
    assert sum(p.numel() for p in unet.parameters()) < 1_000_000  # size is what keeps it fast
    assert min(cpu_seconds) < 0.3  # ~45 ms measured on this CPU


def test_sdxl_pipeline_conditioning_shapes(written):
    pipe = load_pipeline("sdxl", written("sdxl"))
    unet, te2 = pipe.unet.config, pipe.text_encoder_2.config
    assert unet.addition_embed_type == "text_time"
    assert unet.projection_class_embeddings_input_dim == 6 * unet.addition_time_embed_dim + te2.projection_dim
    assert unet.cross_attention_dim == pipe.text_encoder.config.hidden_size + te2.hidden_size
    assert pipe.config.force_zeros_for_empty_prompt is True and pipe.tokenizer_2.pad_token == "!"
    image = pipe("a red house", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 64, 64, 3)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_pipelines_run_at_64px(written, family):
    pipe = load_pipeline(family, written(family))
    assert pipe.vae.config.latent_channels == 16 and pipe.vae_scale_factor == 8
    image = pipe("a photo of a dog", num_inference_steps=2, height=64, width=64,
                 max_sequence_length=32, output_type="np").images
    assert image.shape == (1, 64, 64, 3)


def test_acestep_pipeline_makes_one_second_of_48khz_stereo(written):
    pipe = load_pipeline("acestep", written("acestep"))
    assert pipe.sample_rate == 48_000 and pipe.latents_per_second == 25.0
    audio = pipe("rock song with guitar", lyrics="[verse]\nhello", audio_duration=1.0,
                 num_inference_steps=2, generator=torch.Generator().manual_seed(0)).audios
    assert audio.shape == (1, 2, 48_000) and torch.isfinite(audio).all()


def test_causal_lm_chat_template_and_generate(written):
    folder = written("causal_lm")
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tok)
    assert {tok.bos_token, tok.eos_token, tok.pad_token} == {"<|endoftext|>", "<|im_end|>", "<|pad|>"}
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, return_tensors="pt").input_ids
    assert tok.convert_ids_to_tokens(ids[0, :1].tolist()) == ["<|im_start|>"]  # special, not split
    out = model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 3)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_two_writes_are_byte_identical(written, tmp_path, family):
    torch.set_num_threads(2)  # the first write ran on 1 thread: bytes must not depend on it
    try:
        first, second = written(family), write_tiny_model(family, tmp_path / "again")
    finally:
        torch.set_num_threads(1)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert any(f.suffix == ".safetensors" for f in files)
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_write_leaves_the_callers_random_stream_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    write_tiny_model("causal_lm", tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_ensure_is_idempotent(tmp_path):
    path = ensure_tiny_model("causal_lm", tmp_path)
    assert path == tmp_path / "models" / "tiny-causal_lm" and (path / "config.json").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in path.iterdir()}
    assert ensure_tiny_model("causal_lm", tmp_path) == path
    assert {p: p.stat().st_mtime_ns for p in path.iterdir()} == stamps
    assert [p.name for p in path.parent.iterdir()] == ["tiny-causal_lm"]  # no temp folder left


def test_ensure_losing_a_race_keeps_the_winner(tmp_path, monkeypatch):
    final = tmp_path / "models" / "tiny-causal_lm"
    real_write = tiny.write_tiny_model

    def write_while_another_process_wins(family, out_dir):
        real_write(family, final)  # the other process renames its copy into place first
        (final / "winner.txt").write_text("1")
        return real_write(family, out_dir)

    monkeypatch.setattr(tiny, "write_tiny_model", write_while_another_process_wins)
    assert ensure_tiny_model("causal_lm", tmp_path) == final
    assert (final / "winner.txt").is_file()
    assert [p.name for p in final.parent.iterdir()] == ["tiny-causal_lm"]


def test_ensure_replaces_an_incomplete_folder(tmp_path):
    final = tmp_path / "models" / "tiny-causal_lm"
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"partial")  # no config.json: not a model
    ensure_tiny_model("causal_lm", tmp_path)
    assert (final / "config.json").is_file() and (final / "model.safetensors").stat().st_size > 1000
