"""SD3 and Flux: the rectified-flow loss learns, the schedule follows the library, every file loads in the
ecosystem (diffusers' `load_lora_weights`, its kohya converter, LyCORIS), bad input is named before loading."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from studio.config import ConfigError, deep_merge, finalize_job, load_config
from studio.registry.families import demo_config
from tests.families.fixed_batch import FAST, assert_loss_falls, fixed_batch

FLOW = ("sd3", "flux")  # the families with a kohya-style single file
ALL = (*FLOW, "zimage")
PIPELINES = {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline", "zimage": "ZImagePipeline"}


def _cfg(family: str, **extra):
    return finalize_job(load_config(deep_merge(deep_merge(demo_config(family), FAST), extra)))


def _tiny(family: str) -> Path:
    from studio.families.tiny import ensure_tiny_model

    return ensure_tiny_model(family, os.environ["STUDIO_HOME"])


def _problems(err: pytest.ExceptionInfo) -> dict[str, str]:
    return err.value.by_field


# ---- training truth --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", ALL)
def test_loss_falls_on_a_fixed_batch(family):
    from studio.adapters import inject_adapter
    from studio.families.base import build_family

    cfg = _cfg(family, data={"cache_mode": "off"})
    torch.manual_seed(0)
    fam = build_family(cfg, torch.device("cpu"), torch.float32)
    fam.load()
    handle = inject_adapter(fam, cfg)
    batch = fixed_batch(fam)
    assert_loss_falls(fam, handle, batch)
    # the draws come from the generator only: same seed, same loss; another seed, another loss
    with torch.no_grad():
        again = [fam.loss(batch, torch.Generator().manual_seed(s)).item() for s in (7, 7, 8)]
    assert again[0] == again[1] != again[2]


def test_schedule_shift_is_the_schedulers():
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from studio.families.tiny_flow import FLUX_SCHEDULER, SD3_SCHEDULER
    from studio.families.base import build_family

    u = torch.tensor([0.1, 0.5, 0.9])
    sd3 = build_family(_cfg("sd3"), torch.device("cpu"), torch.float32)
    sd3.noise_scheduler = FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER)
    assert torch.allclose(sd3.shift_sigmas(u, 64, 64), 3 * u / (1 + 2 * u))  # static shift 3 (SD3)
    flux = build_family(_cfg("flux"), torch.device("cpu"), torch.float32)
    flux.noise_scheduler = FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER)
    mu = calculate_shift(32 * 32, 256, 4096, 0.5, 1.15)  # a 512 px image: 32 x 32 packed tokens
    assert flux.shift_mu(64, 64) == pytest.approx(mu)
    assert torch.allclose(flux.shift_sigmas(u, 64, 64), math.exp(mu) / (math.exp(mu) + 1 / u - 1))
    assert flux.shift_mu(128, 128) > flux.shift_mu(64, 64)  # bigger images: noisier timesteps
    fixed = build_family(_cfg("flux", loss={"flow_shift": 2.0}), torch.device("cpu"), torch.float32)
    fixed.noise_scheduler = flux.noise_scheduler
    assert torch.allclose(fixed.shift_sigmas(u, 64, 64), 2 * u / (1 + u))


# ---- exports ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=FLOW)
def lora_run(request, tmp_path_factory):
    from studio.commands.train import run_training
    from studio.runfolder import read_progress

    family = request.param
    run = tmp_path_factory.mktemp(f"{family}-lora")
    cfg = _cfg(family, job={"output_dir": str(run)})
    assert run_training(cfg, run) == 0, read_progress(run)[0][-3:]
    return family, run, read_progress(run)[0]


@pytest.mark.slow
def test_lora_files_are_checked_through_diffusers(lora_run):
    family, run, records = lora_run
    saved = {r["format"]: r for r in records if r.get("event") == "saved"}
    assert set(saved) == {"peft", "kohya"}
    for fmt in ("peft", "kohya"):
        assert saved[fmt]["verified"] is True, saved[fmt]
        assert saved[fmt]["loader"] == "diffusers load_lora_weights"
        assert saved[fmt]["effect_error"] is not None and saved[fmt]["effect_error"] <= 1e-3, saved[fmt]
    from safetensors import safe_open

    with safe_open(str(saved["kohya"]["path"]), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("lora_transformer_") for k in keys)
    assert any(k.endswith(".alpha") for k in keys)
    assert meta["modelspec.architecture"].endswith("/lora") and meta["ss_network_module"] == "networks.lora"


@pytest.mark.slow
def test_peft_and_kohya_files_change_the_pipeline_alike(lora_run):
    """The run folder loads with the pipeline's own `load_lora_weights` and changes its output; the kohya
    file read back by diffusers' converter gives the same output (within 1e-3 of the adapter's effect)."""
    import diffusers
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers
    from safetensors.torch import load_file

    family, run, records = lora_run
    kohya = next(r["path"] for r in records if r.get("event") == "saved" and r["format"] == "kohya")
    cls = getattr(diffusers, PIPELINES[family])

    def output(lora=None):
        pipe = cls.from_pretrained(str(_tiny(family)))
        pipe.set_progress_bar_config(disable=True)
        if lora == "peft":
            pipe.load_lora_weights(str(run))
        elif lora == "kohya" and family == "flux":
            pipe.load_lora_weights(str(Path(kohya).parent), weight_name=Path(kohya).name)
        elif lora == "kohya":  # diffusers' SD3 loader has no kohya reader: its converter of this layout
            pipe.load_lora_weights(_convert_kohya_flux_lora_to_diffusers(load_file(kohya)))
        return pipe("a red circle", num_inference_steps=2, height=64, width=64, output_type="latent",
                    generator=torch.Generator().manual_seed(0)).images

    base, peft, from_kohya = output(), output("peft"), output("kohya")
    effect = (peft - base).norm()
    assert effect > 1e-4 * base.norm(), "the adapter does not change the output"
    assert (from_kohya - peft).norm() <= 1e-3 * effect


@pytest.mark.slow
@pytest.mark.parametrize("family", FLOW)
def test_lycoris_lokr_single_file_is_checked(family, tmp_path):
    from studio.commands.train import run_training
    from studio.runfolder import read_progress

    cfg = _cfg(family, job={"output_dir": str(tmp_path)},
               adapter={"type": "lokr", "backend": "lycoris", "rank": 4, "alpha": 4}, training={"max_steps": 2})
    assert run_training(cfg, tmp_path) == 0
    saved = [r for r in read_progress(tmp_path)[0] if r.get("event") == "saved"]
    assert saved and all(r["verified"] is True for r in saved), saved
    assert any("lycoris" in r["loader"] for r in saved)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "adapter_model.safetensors"), framework="pt") as f:
        assert all(k.startswith("lora_transformer_") for k in f.keys())


# ---- bad input, named before any model loads ---------------------------------------------------------
def test_flux_folder_given_as_sd3_is_named():
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "sd3", "path": str(_tiny("flux"))}})
    message = _problems(err)["model.path"]
    assert "FluxPipeline" in message and "model.family 'flux'" in message


def test_missing_t5_is_named(tmp_path):
    folder = tmp_path / "sd3-no-t5"
    shutil.copytree(_tiny("sd3"), folder)
    shutil.rmtree(folder / "text_encoder_3")
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "sd3", "path": str(folder)}})
    assert "T5" in _problems(err)["model.path"] and "text_encoder_3" in _problems(err)["model.path"]
    index = json.loads((folder / "model_index.json").read_text())
    flux = tmp_path / "flux-no-t5"
    shutil.copytree(_tiny("flux"), flux)
    index = json.loads((flux / "model_index.json").read_text())
    index["text_encoder_2"] = [None, None]  # saved without T5 (diffusers writes nulls)
    (flux / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "flux", "path": str(flux)}})
    assert "text_encoder_2" in _problems(err)["model.path"]


@pytest.mark.parametrize("family", FLOW)
def test_t5_from_its_own_folder(family, tmp_path):
    """model.t5_model_path: a base folder without T5 trains with the T5 of another folder, which then
    gives the same text embeddings as the base's own; the cache knows the T5 came from elsewhere; a
    path that is not a T5 folder is named before loading."""
    from studio.families.base import build_family

    enc, tok = ("text_encoder_3", "tokenizer_3") if family == "sd3" else ("text_encoder_2", "tokenizer_2")
    base = tmp_path / "no-t5"
    shutil.copytree(_tiny(family), base)
    shared = tmp_path / "t5-xxl"
    shutil.move(str(base / enc), shared)
    shutil.move(str(base / tok), tmp_path / "t5-tokenizer")
    for name in (tmp_path / "t5-tokenizer").iterdir():  # a T5 download with its tokenizer beside it
        shutil.copy(name, shared / name.name)
    with pytest.raises(ConfigError) as err:  # without the setting the missing T5 is named
        load_config({"model": {"family": family, "path": str(base)}})
    assert "T5" in _problems(err)["model.path"]

    def encoded(path: Path, t5: str = "") -> tuple[dict, str]:
        cfg = _cfg(family, model={"path": str(path), "t5_model_path": t5}, data={"cache_mode": "off"})
        fam = build_family(cfg, torch.device("cpu"), torch.float32)
        fam.load()
        return fam.encode_text(["a red fox"]), fam.cache_identity("text")

    own, own_id = encoded(_tiny(family))
    borrowed, borrowed_id = encoded(base, str(shared))
    for name, value in own.items():
        assert torch.equal(value, borrowed[name]), name
    assert borrowed_id != own_id and "-t5-" in borrowed_id

    for bad, words in ((tmp_path / "missing", "does not exist"), (_tiny(family) / "vae", "not a T5 encoder")):
        with pytest.raises(ConfigError) as err:
            load_config({"model": {"family": family, "path": str(base), "t5_model_path": str(bad)}})
        assert words in _problems(err)["model.t5_model_path"]


@pytest.mark.parametrize("family", ALL)
def test_bucket_sizes_must_fill_whole_patches(family):
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": family}, "data": {"bucket_step": 24, "resolution": 520}})
    problems = _problems(err)
    assert "multiple of 16" in problems["data.bucket_step"] and "(got 24)" in problems["data.bucket_step"]
    assert "(got 520)" in problems["data.resolution"]
    load_config({"model": {"family": family}, "data": {"bucket_step": 32, "resolution": 512}})


def test_flux_variant_must_fit_the_transformer():
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "flux", "variant": "schnell", "path": str(_tiny("flux"))}})
    assert "'dev'" in _problems(err)["model.variant"]
    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "flux", "variant": "pro"}})
    assert "dev, schnell" in _problems(err)["model.variant"]


# ---- caching -----------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", ALL)
def test_training_reads_cached_latents_and_every_text_encoders_output(family, tmp_path):
    """`cache_mode on`: latents (shifted, scaled) and the pipeline's prompt embeddings are encoded once;
    items then carry them and the VAE and text encoders stay in CPU memory."""
    from studio.families.base import build_family

    cfg = _cfg(family, data={"cache_mode": "on", "cache_dir": str(tmp_path / "cache")})
    fam = build_family(cfg, torch.device("cpu"), torch.float32)
    fam.load()
    assert fam.cache is not None and fam.cache.serves_latents and fam.cache.serves_text
    assert fam.encoders_on_device == (False, False)
    item = fam.train_dataset("train")[0]
    assert "pixel_values" not in item and item["latents"].shape == (16, 8, 8)  # 64 px / 8, 16 channels
    fresh = fam.encode_text([item["caption"]])
    second = "prompt_lengths" if family == "zimage" else "pooled_prompt_embeds"  # Z-Image: real token count
    assert set(fresh) == {"prompt_embeds", second}
    for name, value in fresh.items():
        assert torch.allclose(item[name].float(), value[0].float(), atol=1e-5), name
    tokens = 77 + 256 if family == "sd3" else 512  # SD3: CLIP tokens then T5's; Flux: T5; Z-Image: Qwen3
    assert item["prompt_embeds"].shape[0] == tokens


@pytest.mark.slow
@pytest.mark.parametrize("family, layer", [("flux", "proj_mlp"), ("zimage", "all_final_layer.2-1.linear")])
def test_layers_the_single_file_cannot_carry_are_named_at_export(family, layer, tmp_path):
    """PEFT LoRA on a layer whose single-file name diffusers cannot read back (Flux's single-block MLP under
    `lora_transformer_`; Z-Image's final layer, whose original name its converter does not map): no single file
    is written and the run names the layer; the diffusers-layout adapter is still written and checked."""
    from studio.commands.train import run_training
    from studio.runfolder import read_progress

    first = "attn.to_q" if family == "flux" else "attention.to_q"
    cfg = _cfg(family, job={"output_dir": str(tmp_path)}, training={"max_steps": 1},
               adapter={"target_modules": [first, layer]})
    assert run_training(cfg, tmp_path) == 0
    records = read_progress(tmp_path)[0]
    warnings = [r["message"] for r in records if r.get("event") == "warning"]
    assert any("kohya file not written" in w and layer in w for w in warnings), warnings
    saved = [r for r in records if r.get("event") == "saved"]
    assert [r["format"] for r in saved] == ["peft"] and saved[0]["verified"] is True
    assert not list(tmp_path.glob("*_kohya.safetensors"))


@pytest.mark.parametrize("name", ["tiny-sd3-lora", "tiny-flux-lora", "sd35-medium-lora", "flux-dev-lora",
                                  "flux-schnell-lora", "tiny-zimage-lora", "zimage-turbo-lora"])
def test_presets_validate(name):
    from studio.config.presets import load_preset

    cfg = load_preset(name)
    assert cfg.model.family in ALL and cfg.data.bucket_step % 16 == 0 and cfg.data.resolution % 16 == 0
    if name.startswith("tiny-"):
        assert cfg.model.path == f"tiny:{cfg.model.family}" and cfg.data.path == "demo:images"
    if cfg.model.family == "flux":
        assert cfg.model.variant in ("dev", "schnell") and cfg.model.variant in name or name.startswith("tiny-")


def test_cli_names_a_flux_folder_given_as_sd3_before_loading(tmp_path):
    from tests.conftest import run_studio

    config = tmp_path / "job.json"
    config.write_text(json.dumps({"model": {"family": "sd3", "path": str(_tiny("flux"))},
                                  "data": {"path": "demo:images", "resolution": 64},
                                  "job": {"output_dir": str(tmp_path / "run")}}))
    done = run_studio("train", str(config), timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model.path" in done.stderr + done.stdout and "FluxPipeline" in done.stderr + done.stdout
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_zimage_files_are_checked_and_change_the_pipeline_alike(tmp_path):
    """Z-Image: the run folder's adapter loads with `ZImagePipeline.load_lora_weights` and changes its output;
    the ComfyUI-layout single file (original layer names, q / k / v fused into `attention.qkv`), read back by
    the same loader (diffusers' Z-Image converter), gives the same output within 1e-3 of the adapter's effect."""
    from diffusers import ZImagePipeline

    from studio.commands.train import run_training
    from studio.runfolder import read_progress
    from tests.conftest import checked_single_file

    cfg = _cfg("zimage", job={"output_dir": str(tmp_path)})
    assert run_training(cfg, tmp_path) == 0
    single, keys = checked_single_file(read_progress(tmp_path)[0])
    assert keys and all(k.startswith("diffusion_model.") and k.endswith((".lora.down.weight", ".lora.up.weight"))
                        for k in keys)
    assert "diffusion_model.layers.0.attention.qkv.lora.down.weight" in keys  # the original (ComfyUI) names
    assert "diffusion_model.noise_refiner.0.attention.out.lora.up.weight" in keys
    assert not any(".to_q." in k or ".to_out." in k for k in keys)

    def output(weight_name: str | None = None):
        pipe = ZImagePipeline.from_pretrained(str(_tiny("zimage")))
        pipe.set_progress_bar_config(disable=True)
        if weight_name:
            pipe.load_lora_weights(str(tmp_path), weight_name=weight_name)
        return pipe("a red circle", num_inference_steps=2, height=64, width=64, guidance_scale=0.0,
                    output_type="latent", generator=torch.Generator().manual_seed(0)).images

    base, peft, from_single = output(), output("adapter_model.safetensors"), output(single.name)
    effect = (peft - base).norm()
    assert effect > 1e-4 * base.norm(), "the adapter does not change the output"
    assert (from_single - peft).norm() <= 1e-3 * effect


def test_zimage_fused_qkv_is_the_three_separate_loras():
    """LoRAs on to_q and to_v (scale folded in; to_k without one) become one LoRA on the fused `attention.qkv`
    whose change is the three changes stacked (k's rows zero), and diffusers' converter splits it back into
    three LoRAs with the same changes."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_z_image_lora_to_diffusers

    from studio.families.zimage_export import comfy_tensors

    gen = torch.Generator().manual_seed(0)
    dim, ranks = 6, {"to_q": 2, "to_v": 3}
    layers = {f"layers.1.attention.{p}": (torch.randn(r, dim, generator=gen), torch.randn(dim, r, generator=gen))
              for p, r in ranks.items()}
    layers["layers.1.attention.to_out.0"] = (torch.randn(2, dim, generator=gen), torch.randn(dim, 2, generator=gen))
    out = comfy_tensors(layers)
    stem = "diffusion_model.layers.1.attention."
    assert set(out) == {stem + f"{n}.lora.{d}.weight" for n in ("qkv", "out") for d in ("down", "up")}
    fused = out[stem + "qkv.lora.up.weight"] @ out[stem + "qkv.lora.down.weight"]
    deltas = {p: up @ down for p, (down, up) in layers.items()}
    q, v = deltas["layers.1.attention.to_q"], deltas["layers.1.attention.to_v"]
    assert fused.shape == (3 * dim, dim)
    assert torch.allclose(fused, torch.cat([q, torch.zeros(dim, dim), v]), atol=1e-6)
    assert torch.equal(out[stem + "out.lora.up.weight"], layers["layers.1.attention.to_out.0"][1])
    back = _convert_non_diffusers_z_image_lora_to_diffusers(dict(out))
    for proj, want in (("to_q", q), ("to_k", torch.zeros(dim, dim)), ("to_v", v), ("to_out.0", None)):
        name = f"transformer.layers.1.attention.{proj}"
        got = back[f"{name}.lora_B.weight"] @ back[f"{name}.lora_A.weight"]
        want = deltas["layers.1.attention.to_out.0"] if want is None else want
        assert torch.allclose(got, want, atol=1e-6), proj


@pytest.mark.slow
def test_flux_schnell_trains_without_guidance_or_shift(tmp_path):
    """A schnell-type folder (no guidance embedding, scheduler without shift): the variant is accepted,
    the transformer gets no guidance, sigma = u, and the adapter trains."""
    from studio.adapters import inject_adapter
    from studio.families.base import build_family

    folder = tmp_path / "schnell"
    shutil.copytree(_tiny("flux"), folder)
    for name, changes in (("transformer/config.json", {"guidance_embeds": False}),
                          ("scheduler/scheduler_config.json", {"use_dynamic_shifting": False, "shift": 1.0})):
        config = folder / name
        config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
    cfg = _cfg("flux", model={"path": str(folder), "variant": "schnell"}, data={"cache_mode": "off"})
    fam = build_family(cfg, torch.device("cpu"), torch.float32)
    fam.load()
    assert not fam.transformer.config.guidance_embeds and fam.max_tokens == 256
    u = torch.tensor([0.2, 0.7])
    assert torch.equal(fam.shift_sigmas(u, 8, 8), u)
    handle = inject_adapter(fam, cfg)
    batch = fam.collate([fam.train_dataset("train")[i] for i in range(2)])
    loss = fam.loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert math.isfinite(loss.item()) and any(p.grad is not None and p.grad.abs().sum() > 0
                                              for p in handle.trainable_params())
