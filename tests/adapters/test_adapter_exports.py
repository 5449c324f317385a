"""Exported files in the loaders users use: diffusers' `load_lora_weights` for LoRA (PEFT layout and
kohya file give the same image), DoRA through diffusers (PEFT layout) and LyCORIS (kohya file, the
reading ComfyUI/A1111 share), and exports that never publish a wrong or partial file."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.adapters.conftest import build, sd15_config, train_step


def _image(pipe) -> np.ndarray:
    gen = torch.Generator().manual_seed(7)
    return pipe("a red circle", num_inference_steps=2, guidance_scale=3.0, height=64, width=64, generator=gen,
                output_type="np").images[0]


def _fresh_pipe(family):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(family.model_path, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = type(family.pipeline().scheduler).from_config(family.pipeline().scheduler.config)  # as trained
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _trained_run(tmp_path, kind: str):
    from studio.adapters.export import finish_exports

    cfg = sd15_config(tmp_path, {"type": kind})
    family, handle = build(cfg)
    train_step(family, handle, lr=3e-2, steps=2)
    results = finish_exports(handle, tmp_path / "run", step=2)
    assert all(r.ok for r in results), [r.summary() for r in results]
    kohya = next((tmp_path / "run").glob("*_kohya.safetensors"))
    return family, handle, kohya


def test_lora_kohya_file_and_peft_layout_give_the_same_image_in_diffusers(tmp_path):
    family, handle, kohya = _trained_run(tmp_path, "lora")
    run = tmp_path / "run"
    with handle.eval_mode():
        trained = _image(family.pipeline())
    base = _image(_fresh_pipe(family))
    images = {}
    for name, kwargs in (("peft", {"weight_name": "adapter_model.safetensors"}), ("kohya", {"weight_name": kohya.name}),
                         ("folder", {})):  # the bare run folder: diffusers picks one of the two files itself
        pipe = _fresh_pipe(family)
        pipe.load_lora_weights(str(run), **kwargs)
        images[name] = _image(pipe)
    assert np.abs(trained - base).max() > 1e-3, "the adapter must change the image for this test to mean anything"
    for name, image in images.items():
        assert np.abs(image - trained).max() < 1e-5, name


def test_dora_exports_reproduce_the_trained_image(tmp_path):
    from lycoris import create_lycoris_from_weights
    from safetensors.torch import load_file

    from studio.adapters.lycoris_backend import _set_preset

    family, handle, kohya = _trained_run(tmp_path, "dora")
    with handle.eval_mode():
        trained = _image(family.pipeline())
    peft_pipe = _fresh_pipe(family)
    peft_pipe.load_lora_weights(str(tmp_path / "run"), weight_name="adapter_model.safetensors")
    assert np.abs(_image(peft_pipe) - trained).max() < 1e-5

    # The bare run folder: diffusers' own file name is there, so diffusers never picks the kohya file
    # (whose dora_scale it would drop, see below).
    folder_pipe = _fresh_pipe(family)
    folder_pipe.load_lora_weights(str(tmp_path / "run"))
    assert np.abs(_image(folder_pipe) - trained).max() < 1e-5

    # The kohya file as ComfyUI / A1111 read it: LyCORIS' loader (dora_scale on the output axis).
    lyco_pipe = _fresh_pipe(family)
    _set_preset("lora_unet", None)
    net, _ = create_lycoris_from_weights(1.0, "", lyco_pipe.unet, weights_sd=load_file(str(kohya)))
    net.apply_to()
    assert len(net.loras) == 56  # 7 transformer blocks x 2 attentions x 4 projections
    assert np.abs(_image(lyco_pipe) - trained).max() < 1e-5


def test_diffusers_still_drops_kohya_dora_scale(tmp_path, caplog):
    """Why kohya DoRA files are checked with LyCORIS: diffusers' SD loader filters `dora_scale` out of
    kohya files (with a warning). When this test fails, diffusers has fixed it and can check them too."""
    family, handle, kohya = _trained_run(tmp_path, "dora")
    with handle.eval_mode():
        trained = _image(family.pipeline())
    pipe = _fresh_pipe(family)
    pipe.load_lora_weights(str(kohya.parent), weight_name=kohya.name)
    assert np.abs(_image(pipe) - trained).max() > 1e-4


def test_a_mismatching_export_is_not_published_and_keeps_the_previous_file(tmp_path):
    from studio.adapters.export import export_adapter
    from studio.adapters.verify import reference_outputs

    cfg = sd15_config(tmp_path, {"type": "lora"})
    family, handle = build(cfg)
    train_step(family, handle)
    dest = tmp_path / "out" / "adapter_kohya.safetensors"
    first = export_adapter(handle, "kohya", dest, reference_outputs(handle))
    assert first.ok and dest.is_file()
    before = dest.read_bytes()

    stale = reference_outputs(handle)
    train_step(family, handle, lr=5e-2)  # the model moves on: the old reference no longer matches
    result = export_adapter(handle, "kohya", dest, stale)
    assert not result.ok and "differs from the trained model" in result.summary()
    assert dest.read_bytes() == before
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name], "no temp file may stay behind"


def test_export_of_an_unknown_format_names_the_choices(tmp_path):
    from studio.adapters.export import export_adapter

    with pytest.raises(ValueError, match="peft, kohya, dora_lora, merged"):
        export_adapter(None, "ckpt", tmp_path / "x", None)
