"""A quantized frozen base for the image families (model.quantization / quantization_backend / fp8_base /
quantize_via): torchao's int8 weights train a LoRA on the CPU for real and its files load back in
diffusers; what needs CUDA (bitsandbytes through diffusers, float8) is refused before anything loads."""
from __future__ import annotations

import os

import pytest
import torch

from studio.config import ConfigError
from tests.train.fast_image import image_cfg
from tests.families.fixed_batch import assert_loss_falls, fixed_batch

INT8 = {"model": {"quantization": "8bit", "quantization_backend": "torchao"}}
_cfg = image_cfg


def _loaded(cfg):
    from studio.adapters import inject_adapter
    from studio.families.base import build_family

    torch.manual_seed(0)
    fam = build_family(cfg, torch.device("cpu"), torch.float32)
    fam.load()
    return fam, inject_adapter(fam, cfg)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flux", "sd15"])
def test_int8_base_holds_quantized_weights_and_the_lora_learns(family):
    from torchao.utils import TorchAOBaseTensor

    fam, handle = _loaded(_cfg(family, INT8, {"data": {"cache_mode": "off"}}))
    net = fam.trainable_module()
    quantized = [n for n, m in net.named_modules() if isinstance(getattr(m, "weight", None), TorchAOBaseTensor)]
    assert quantized, "no layer of the base holds torchao int8 weights"
    full, _ = _loaded(_cfg(family, {"data": {"cache_mode": "off"}}))
    assert not any(isinstance(getattr(m, "weight", None), TorchAOBaseTensor) for m in full.trainable_module().modules())
    assert all(p.dtype == torch.float32 for p in handle.trainable_params())  # the adapter trains in full precision
    batch = fixed_batch(fam)
    assert_loss_falls(fam, handle, batch)


@pytest.mark.slow
def test_int8_flux_run_ends_with_exports_that_load_in_diffusers(tmp_path):
    from studio.commands.train import run_training
    from studio.runfolder import read_progress

    cfg = _cfg("flux", INT8, {"job": {"output_dir": str(tmp_path)}})
    assert run_training(cfg, tmp_path) == 0, read_progress(tmp_path)[0][-3:]
    saved = {r["format"]: r for r in read_progress(tmp_path)[0] if r.get("event") == "saved"}
    assert saved and all(r["verified"] is True for r in saved.values()), saved
    import diffusers

    from studio.families.tiny import ensure_tiny_model

    pipe = diffusers.FluxPipeline.from_pretrained(str(ensure_tiny_model("flux", os.environ["STUDIO_HOME"])))
    pipe.load_lora_weights(str(tmp_path))  # the adapter of a quantized run loads into the full base


def test_what_needs_cuda_is_refused_on_the_cpu_before_loading():
    from studio.runfolder.device import check_device

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    cases = {("model.quantization", "bitsandbytes needs a CUDA GPU"): {"model": {"quantization": "4bit"}},
             ("model.fp8_base", "float8 weights need an NVIDIA GPU"): {"model": {"fp8_base": True}}}
    for (field, text), extra in cases.items():
        with pytest.raises(ConfigError) as err:
            check_device(_cfg("flux", extra))
        assert text in err.value.by_field[field]
    check_device(_cfg("flux", INT8))  # torchao's int8 weights run here


@pytest.mark.parametrize("extra, field, text", [
    ({"model": {"quantization": "4bit", "quantization_backend": "torchao"}}, "model.quantization", "8bit"),
    ({"model": {"quantization": "8bit", "fp8_base": True}}, "model.fp8_base", "not both"),
    ({"model": {"quantization": "8bit", "quantize_via": "cpu"}}, "model.quantize_via", "bitsandbytes"),
    ({**INT8, "adapter": {"type": "loha"}}, "model.quantization", "LoRA"),
    ({**INT8, "adapter": {"type": "lora", "backend": "lycoris"}}, "model.quantization", "LoRA"),
    ({**INT8, "adapter": {"merge_after_training": True}}, "adapter.merge_after_training", "merge"),
])
def test_quantized_image_base_rules_name_their_field(extra, field, text):
    with pytest.raises(ConfigError) as err:
        _cfg("flux", extra)
    assert text in err.value.by_field[field]


def test_families_without_a_quantized_loader_are_refused():
    with pytest.raises(ConfigError) as err:
        _cfg("acestep", {"model": {"quantization": "8bit"}})
    assert "cannot load a quantized base" in err.value.by_field["model.quantization"]
