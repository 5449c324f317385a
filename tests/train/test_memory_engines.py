"""Memory engines at CPU smoke sizes: each one changes where or how often tensors live, never the result
(memory.no_half_vae, gradient_checkpointing_interval, activation_offload, offload_during_startup)."""
from __future__ import annotations

import pytest
import torch

from studio.config import ConfigError
from tests.train.fast_image import image_cfg

CHECKPOINTED = {"memory": {"gradient_checkpointing": True}}


def _cfg(family: str, *extras: dict):
    return image_cfg(family, CHECKPOINTED, *extras)


def _family(cfg, dtype=torch.float32):
    from studio.families.base import build_family

    torch.manual_seed(0)
    fam = build_family(cfg, torch.device("cpu"), dtype)
    fam.load()
    return fam


@pytest.mark.parametrize("on", [False, True])
def test_no_half_vae_keeps_the_vae_in_fp32(on):
    fam = _family(_cfg("sd15", {"memory": {"no_half_vae": on}, "data": {"cache_mode": "off"}}), torch.bfloat16)
    assert fam.unet.dtype == torch.bfloat16
    assert fam.vae.dtype == (torch.float32 if on else torch.bfloat16)
    latents = fam.encode_images(torch.zeros(1, 3, 64, 64))
    assert torch.isfinite(latents).all()


def _block_runs_and_grads(interval: int):
    from studio.adapters import inject_adapter

    cfg = _cfg("sd3", {"memory": {"gradient_checkpointing_interval": interval}, "data": {"cache_mode": "off"}})
    fam = _family(cfg)
    handle = inject_adapter(fam, cfg)
    fam.gradient_checkpointing()
    blocks = fam.transformer.transformer_blocks
    assert len(blocks) >= 2
    runs = []
    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda *_, i=i: runs.append(i))  # recompute may stop early
    fam.transformer.train()
    data = fam.train_dataset("train")
    batch = fam.collate([data[0], data[1]])
    loss = fam.loss(batch, torch.Generator().manual_seed(3))
    loss.backward()
    return runs, loss.item(), [p.grad.clone() for p in handle.trainable_params()]


@pytest.mark.slow
def test_checkpointing_every_second_block_recomputes_half_the_blocks_with_the_same_gradients():
    every, loss1, grads1 = _block_runs_and_grads(1)
    half, loss2, grads2 = _block_runs_and_grads(2)
    n = len(set(every))
    assert len(every) == 2 * n  # each block: forward, then recomputed in backward
    assert len(half) == n + len(range(0, n, 2))  # only blocks 0, 2, ... recomputed
    assert loss1 == pytest.approx(loss2, rel=1e-6)
    for a, b in zip(grads1, grads2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_activation_offload_saves_for_backward_on_the_cpu_and_needs_checkpointing():
    from studio.train.memory import saved_activations

    on = _cfg("sd15", {"memory": {"activation_offload": True}})
    assert isinstance(saved_activations(on, torch.device("cuda"))(), torch.autograd.graph.save_on_cpu)
    assert not isinstance(saved_activations(_cfg("sd15"), torch.device("cuda"))(), torch.autograd.graph.save_on_cpu)
    with pytest.raises(ConfigError) as err:
        _cfg("sd15", {"memory": {"activation_offload": True, "gradient_checkpointing": False}})
    assert "gradient_checkpointing" in err.value.by_field["memory.activation_offload"]


@pytest.mark.slow
def test_activation_offload_trains_to_the_same_adapter(tmp_path):
    from safetensors.torch import load_file

    from studio.commands.train import run_training

    weights = []
    for on in (False, True):
        run = tmp_path / str(on)
        run.mkdir()
        cfg = _cfg("sd15", {"memory": {"activation_offload": on}, "job": {"output_dir": str(run)},
                            "adapter": {"verify_exports": False}})
        assert run_training(cfg, run) == 0
        weights.append(load_file(str(run / "adapter_model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("offload", [False, True])
def test_offload_during_startup_builds_the_text_cache_with_encoders_in_system_ram(offload, tmp_path, monkeypatch):
    from studio.families.flux import FluxFamily

    seen = []
    encode = FluxFamily.encode_text

    def watched(self, captions, encoders=None):
        seen.append(self.encoders_on_device[1])  # were the text encoders moved to the device?
        return encode(self, captions, encoders)

    monkeypatch.setattr(FluxFamily, "encode_text", watched)
    cfg = _cfg("flux", {"memory": {"offload_during_startup": offload},
                        "data": {"cache_mode": "on", "cache_dir": str(tmp_path / "cache")}})
    fam = _family(cfg)
    assert seen and set(seen) == {not offload}
    assert fam.cache is not None and fam.cache.serves_text  # training reads the cache either way


def _loss_and_grads(family: str, memory: dict, swap: bool = False):
    from studio.adapters import inject_adapter
    from studio.train.memory import swap_blocks

    cfg = _cfg(family, {"memory": memory, "data": {"cache_mode": "off"}})
    fam = _family(cfg)
    swapped = swap_blocks(fam.trainable_module(), cfg.memory.blocks_to_swap, torch.device("cpu")) if swap else []
    handle = inject_adapter(fam, cfg)
    fam.gradient_checkpointing()
    fam.trainable_module().train()
    data = fam.train_dataset("train")
    loss = fam.loss(fam.collate([data[0], data[1]]), torch.Generator().manual_seed(3))
    loss.backward()
    return fam, swapped, loss.item(), [p.grad.clone() for p in handle.trainable_params()]


@pytest.mark.slow
def test_swapped_blocks_get_offload_hooks_and_train_alike():
    from diffusers.hooks import HookRegistry

    _, _, loss, grads = _loss_and_grads("flux", {})
    fam, swapped, loss_swapped, grads_swapped = _loss_and_grads("flux", {"blocks_to_swap": 1}, swap=True)
    assert swapped == [fam.transformer.single_transformer_blocks[-1]]  # the last block of the last stack
    hooked = [m for block in swapped for m in block.modules() if isinstance(getattr(m, "_diffusers_hook", None), HookRegistry)]
    assert hooked  # each layer of the swapped blocks is brought in (and sent back) by diffusers' hooks
    assert not any(isinstance(getattr(m, "_diffusers_hook", None), HookRegistry)
                   for m in fam.transformer.transformer_blocks[0].modules())
    assert loss_swapped == pytest.approx(loss, rel=1e-6)
    for a, b in zip(grads, grads_swapped):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_blocks_to_swap_is_bounded_and_needs_checkpointing():
    from studio.train.memory import swap_blocks

    fam = _family(_cfg("flux", {"data": {"cache_mode": "off"}}))
    with pytest.raises(ValueError, match=r"memory\.blocks_to_swap: 99 is more than the \d+ blocks"):
        swap_blocks(fam.transformer, 99, torch.device("cpu"))
    with pytest.raises(ConfigError) as err:
        _cfg("flux", {"memory": {"blocks_to_swap": 1, "gradient_checkpointing": False}})
    assert "gradient_checkpointing" in err.value.by_field["memory.blocks_to_swap"]


@pytest.mark.parametrize("on", [False, True])
def test_lowram_loads_the_network_through_a_device_map(on):
    fam = _family(_cfg("flux", {"memory": {"lowram": on}, "data": {"cache_mode": "off"}}))
    assert getattr(fam.transformer, "hf_device_map", None) == ({"": "cpu"} if on else None)
    assert fam.transformer.device.type == "cpu"


@pytest.mark.slow
def test_a_run_with_swapped_blocks_and_lowram_ends_with_verified_exports(tmp_path):
    from studio.commands.train import run_training
    from studio.runfolder import read_progress

    cfg = _cfg("flux", {"memory": {"blocks_to_swap": 1, "lowram": True}, "job": {"output_dir": str(tmp_path)}})
    assert run_training(cfg, tmp_path) == 0, read_progress(tmp_path)[0][-3:]
    saved = [r for r in read_progress(tmp_path)[0] if r.get("event") == "saved"]
    assert saved and all(r["verified"] is True for r in saved), saved
