"""A flow family's base from one original-layout transformer file (`model.path` = the `.safetensors` BFL,
Stability, Tongyi or CircleStone ship), read by diffusers' `from_single_file` with the other parts from
`model.extras_path`: the weights are the file's, a run trains and its exports verify, bad files are named
before anything loads."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from studio.config import ConfigError, deep_merge, finalize_job, load_config
from studio.registry.families import demo_config
from tests.families.fixed_batch import FAST
from tests.families.original_layout import (anima_original, clip_original, flux_original, sd3_original, unet_original,
                                            zimage_original)

FAMILIES = ("flux", "sd3", "zimage", "anima")
CLASSES = {"flux": "FluxTransformer2DModel", "sd3": "SD3Transformer2DModel", "zimage": "ZImageTransformer2DModel",
           "anima": "CosmosTransformer3DModel"}


def _tiny(family: str) -> Path:
    from studio.families.tiny import ensure_tiny_model

    return ensure_tiny_model(family, os.environ["STUDIO_HOME"])


def _cfg(family: str, **extra):
    return finalize_job(load_config(deep_merge(deep_merge(demo_config(family), FAST), extra)))


def _reseeded(family: str, seed: int = 1) -> dict[str, dict[str, torch.Tensor]]:
    """Weights of the tiny transformer's architecture drawn afresh (so they differ from the folder's):
    {"transformer": state, "llm_adapter": state (Anima; else {})}."""
    import diffusers

    folder = _tiny(family)
    cls = getattr(diffusers, CLASSES[family])
    torch.manual_seed(seed)
    model = cls.from_config(cls.load_config(str(folder), subfolder="transformer"))
    for p in model.parameters():  # some inits are zeros or ones: give every weight a value of its own
        p.data.add_(0.02 * torch.randn_like(p))
    out = {"transformer": {k: v.contiguous() for k, v in model.state_dict().items()}, "llm_adapter": {}}
    if family == "anima":
        cond = diffusers.AnimaTextConditioner.from_pretrained(str(folder), subfolder="text_conditioner")
        for p in cond.parameters():
            p.data.add_(0.02 * torch.randn_like(p))
        out["llm_adapter"] = {k: v.contiguous() for k, v in cond.state_dict().items()}
    return out


def _original(family: str, weights: dict) -> dict[str, torch.Tensor]:
    if family == "anima":
        return anima_original(weights["transformer"], weights["llm_adapter"])
    return {"flux": flux_original, "sd3": sd3_original, "zimage": zimage_original}[family](weights["transformer"])


def _write(family: str, path: Path, weights: dict | None = None, prefix: str = "") -> Path:
    state = _original(family, weights or _reseeded(family))
    save_file({prefix + k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _problems(cfg_or_err) -> dict[str, str]:
    return cfg_or_err.value.by_field


# ---- the test files are what diffusers reads ---------------------------------------------------------
@pytest.mark.parametrize("family", ["sd3", "zimage", "anima"])
def test_original_layout_writers_invert_diffusers_converters(family):
    """diffusers' own converter maps each written file back onto the diffusers state dict exactly (Flux's
    converter assumes FLUX.1's width: its check is the next test)."""
    from diffusers.loaders import single_file_utils as U

    convert = {"sd3": U.convert_sd3_transformer_checkpoint_to_diffusers,
               "zimage": U.convert_z_image_transformer_checkpoint_to_diffusers,
               "anima": U.convert_cosmos_transformer_checkpoint_to_diffusers}[family]
    weights = _reseeded(family)
    original = {k: v for k, v in _original(family, weights).items() if not k.startswith("net.llm_adapter.")}
    back = convert(dict(original), config=None)
    assert set(back) == set(weights["transformer"])
    assert all(torch.equal(back[k], weights["transformer"][k]) for k in back)


def test_flux_conversion_of_any_width_is_diffusers_mapping():
    """The studio runs diffusers' Flux converter on a file of the tiny width (its single-block split
    assumes 3072): every name and value comes back."""
    from studio.families.single_file import _flux_state

    weights = _reseeded("flux")["transformer"]
    back = _flux_state(flux_original(weights))
    assert set(back) == set(weights)
    assert all(torch.equal(back[k], weights[k]) for k in back)


# ---- loading: the file's weights, the folder's other parts -----------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_family_loads_its_transformer_from_the_file(family, tmp_path):
    from studio.families.base import build_family

    weights = _reseeded(family)
    prefix = "model.diffusion_model." if family == "flux" else ""  # ComfyUI's whole-checkpoint prefix too
    file = _write(family, tmp_path / f"{family}.safetensors", weights, prefix)
    cfg = _cfg(family, model={"path": str(file), "extras_path": str(_tiny(family))}, data={"cache_mode": "off"})
    fam = build_family(cfg, torch.device("cpu"), torch.float32)
    fam.load()
    loaded = fam.transformer.state_dict()
    assert set(loaded) == set(weights["transformer"])
    assert all(torch.equal(loaded[k], weights["transformer"][k]) for k in loaded)  # the file's, not the folder's
    if family == "anima":
        cond = fam.text_conditioner.state_dict()
        assert all(torch.equal(cond[k], weights["llm_adapter"][k]) for k in weights["llm_adapter"])
    # the other parts are the folder's, and the model runs
    assert fam.parts_path() == str(_tiny(family))
    batch_text = fam.encode_text(["a red circle"])
    assert all(torch.isfinite(v).all() for v in batch_text.values() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flux", "sd15"])
def test_a_run_from_a_single_file_trains_and_its_exports_verify(family, tmp_path):
    """The whole job from a single file: LoRA trains, the adapter and the ComfyUI file are verified against
    the base loaded the same way (the file), and the run records the file as its base."""
    from studio.commands.train import run_training
    from studio.runfolder import read_progress

    file = tmp_path / f"{family}-tiny.safetensors"
    _write(family, file) if family == "flux" else _sd_checkpoint(family, file)
    run = tmp_path / "run"
    run.mkdir()
    cfg = _cfg(family, job={"output_dir": str(run)},
               model={"path": str(file), "extras_path": str(_tiny(family))})
    assert run_training(cfg, run) == 0, read_progress(run)[0][-3:]
    saved = {r["format"]: r for r in read_progress(run)[0] if r.get("event") == "saved"}
    assert set(saved) == {"peft", "kohya"}
    for record in saved.values():  # each file changes the file-loaded base as the trained adapter did
        assert record["verified"] is True and record["effect_error"] <= 1e-3, record
    args = json.loads((run / "training_args.json").read_text())
    model = args["config"]["model"]
    assert model["path"] == str(file) and model["extras_path"] == str(_tiny(family))


def _sd_checkpoint(family: str, path: Path) -> dict[str, torch.Tensor]:
    """A reseeded UNet (and, SD 1.5, text encoder) written as an LDM checkpoint without its VAE; returns the
    diffusers-named UNet weights it holds."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = _tiny(family)
    torch.manual_seed(3)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder), subfolder="unet"))
    state = {k: v.contiguous() for k, v in unet.state_dict().items()}
    original = unet_original(state, dict(unet.config))
    if family == "sd15":
        te = CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder")
        for p in te.parameters():
            p.data.add_(0.02 * torch.randn_like(p))
        original.update(clip_original({k: v.contiguous() for k, v in te.state_dict().items()}))
        state["text_encoder"] = te.state_dict()
    save_file({k: v for k, v in original.items()}, str(path))
    return state


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_sd_checkpoint_loads_offline_with_the_parts_of_a_folder(family, tmp_path):
    """An LDM checkpoint (UNet, SD 1.5 also its CLIP) with model.extras_path: the UNet and text encoder are
    the file's, the VAE (absent from the file) and the config the folder's, for training and for the export
    check's fresh base alike."""
    from diffusers import AutoencoderKL

    from studio.families.base import build_family

    file = tmp_path / f"{family}.safetensors"
    expected = _sd_checkpoint(family, file)
    te_expected = expected.pop("text_encoder", None)
    cfg = _cfg(family, model={"path": str(file), "extras_path": str(_tiny(family))}, data={"cache_mode": "off"})
    fam = build_family(cfg, torch.device("cpu"), torch.float32)
    fam.load()
    loaded = fam.unet.state_dict()
    assert set(loaded) == set(expected) and all(torch.equal(loaded[k], expected[k]) for k in loaded)
    if te_expected is not None:
        te = fam.text_encoders[0].state_dict()
        assert set(te) == set(te_expected) and all(torch.equal(te[k], v) for k, v in te_expected.items())
    folder_vae = AutoencoderKL.from_pretrained(str(_tiny(family)), subfolder="vae").state_dict()
    assert all(torch.equal(v, folder_vae[k]) for k, v in fam.vae.state_dict().items())
    fresh = fam.load_base_components()["unet"].state_dict()  # the export check's base: the file again
    assert all(torch.equal(fresh[k], expected[k]) for k in expected)


# ---- bad input, named before loading ----------------------------------------------------------------
def test_a_flux_file_given_as_sd3_is_named(tmp_path):
    file = _write("flux", tmp_path / "flux.safetensors")
    with pytest.raises(ConfigError) as err:
        _cfg("sd3", model={"path": str(file), "extras_path": str(_tiny("sd3"))})
    assert "not an SD3" in _problems(err)["model.path"] and "model.family 'flux'" in _problems(err)["model.path"]


def test_schnell_file_with_dev_variant_is_named(tmp_path):
    weights = _reseeded("flux")
    state = {k: v for k, v in flux_original(weights["transformer"]).items() if not k.startswith("guidance_in.")}
    file = tmp_path / "schnell.safetensors"
    save_file(state, str(file))
    with pytest.raises(ConfigError) as err:
        _cfg("flux", model={"path": str(file), "extras_path": str(_tiny("flux")), "variant": "dev"})
    assert "schnell" in _problems(err)["model.variant"]


def test_lora_and_unreadable_files_are_named(tmp_path):
    lora = tmp_path / "my_lora.safetensors"
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    with pytest.raises(ConfigError) as err:
        _cfg("flux", model={"path": str(lora), "extras_path": str(_tiny("flux"))})
    assert "LoRA" in _problems(err)["model.path"]
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ConfigError) as err:
        _cfg("flux", model={"path": str(broken), "extras_path": str(_tiny("flux"))})
    assert "broken.safetensors is not a readable safetensors file" in _problems(err)["model.path"]


def test_extras_path_is_checked_and_needed_where_diffusers_cannot_tell(tmp_path):
    file = _write("sd3", tmp_path / "sd3.safetensors")
    # the tiny SD3 is too small for diffusers' size-based release inference: the parts must be named
    with pytest.raises(ConfigError) as err:
        _cfg("sd3", model={"path": str(file)})
    assert "model.extras_path" in _problems(err)
    with pytest.raises(ConfigError) as err:  # a folder of the other pipeline as the parts
        _cfg("sd3", model={"path": str(file), "extras_path": str(_tiny("flux"))})
    assert "FluxPipeline" in _problems(err)["model.extras_path"]
    with pytest.raises(ConfigError) as err:  # set while model.path is a folder: refused, not ignored
        _cfg("sd3", model={"path": str(_tiny("sd3")), "extras_path": str(_tiny("sd3"))})
    assert "only when model.path is a single" in _problems(err)["model.extras_path"]


@pytest.mark.parametrize("family,dropped", [("sd3", "joint_blocks.1.x_block.mlp."), ("zimage", "layers.1.feed_forward.")])
def test_a_file_missing_weights_is_refused_at_load(family, dropped, tmp_path):
    """SD3's converter asks for each key by name (a KeyError inside diffusers); Z-Image's renames what is
    there (parameters left unset): both end in one error naming the file."""
    from studio.families.base import build_family

    state = _original(family, _reseeded(family))
    assert any(k.startswith(dropped) for k in state)
    file = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith(dropped)}, str(file))
    cfg = _cfg(family, model={"path": str(file), "extras_path": str(_tiny(family))}, data={"cache_mode": "off"})
    fam = build_family(cfg, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match=r"model.path: partial.safetensors lacks"):
        fam.load()


def test_the_default_parts_are_the_repository_diffusers_infers():
    """With model.extras_path empty the parts come from where diffusers' own inference points for the
    release the file is (shapes as the real files' headers give them; no weights needed)."""
    from types import SimpleNamespace as S

    from studio.config.single_file import default_extras

    flux = {"double_blocks.0.img_attn.norm.key_norm.scale": S(shape=(128,)), "img_in.weight": S(shape=(3072, 64))}
    assert default_extras("flux", {**flux, "guidance_in.in_layer.bias": S(shape=(3072,))}) == "black-forest-labs/FLUX.1-dev"
    assert default_extras("flux", flux) == "black-forest-labs/FLUX.1-schnell"
    sd35m = {"joint_blocks.0.context_block.adaLN_modulation.1.bias": S(shape=(9216,)),
             "pos_embed": S(shape=(1, 147456, 1536))}
    assert default_extras("sd3", sd35m) == "stabilityai/stable-diffusion-3.5-medium"
    assert default_extras("sd3", flux) is None  # not an SD3 release diffusers knows
    assert default_extras("anima", {}) == "circlestone-labs/Anima-Base-v1.0-Diffusers"


def test_sd_extras_folder_is_checked_before_loading(tmp_path):
    from studio.config.preflight import preflight_problems

    file = tmp_path / "sd15.safetensors"
    _sd_checkpoint("sd15", file)
    cfg = _cfg("sd15", model={"path": str(file), "extras_path": str(_tiny("flux"))})
    problems = dict(preflight_problems(cfg))
    assert "lacks unet" in problems["model.extras_path"], problems
    cfg = _cfg("sd15", model={"path": str(file), "extras_path": str(file)})
    assert "not a file" in dict(preflight_problems(cfg))["model.extras_path"]
    assert "model.extras_path" not in dict(preflight_problems(
        _cfg("sd15", model={"path": str(file), "extras_path": str(_tiny("sd15"))})))
