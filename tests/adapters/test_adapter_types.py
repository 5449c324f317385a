"""The adapter table on tiny SD 1.5: every type (and LyCORIS' variants) injects the expected number of
trainable weights, one optimizer step changes the output, save -> load reproduces it, and every export
(PEFT layout, kohya file, merged model) loads back through its target loader with the same output."""
from __future__ import annotations

import math

import pytest
import torch

from tests.adapters.conftest import build, output, rel, sd15_config, train_step

RANK = 4
CONV_RANK = 2
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
CONV = ("conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv")

# (type, backend, extra settings, formats the run must write and verify)
TABLE = [
    ("lora", "auto", {}, ("peft", "kohya", "merged")),
    ("dora", "auto", {}, ("peft", "kohya", "merged")),
    ("loha", "auto", {}, ("peft", "kohya", "merged")),
    ("lokr", "auto", {}, ("peft", "kohya", "merged")),
    # auto on SD: LyCORIS for the types whose PEFT weights have no kohya/ComfyUI form, so the file is written
    ("oft", "auto", {}, ("peft", "kohya", "merged")),
    ("boft", "auto", {}, ("peft", "kohya", "merged")),
    ("ia3", "auto", {}, ("peft", "kohya", "merged")),
    ("oft", "peft", {}, ("peft", "merged")),  # PEFT's OFT has no kohya/ComfyUI form (LyCORIS' has)
    ("boft", "peft", {}, ("peft", "merged")),
    ("ia3", "peft", {}, ("peft", "merged")),
    ("locon", "auto", {"conv_rank": CONV_RANK, "conv_alpha": 1}, ("peft", "kohya", "merged")),
    ("glora", "auto", {}, ("peft", "kohya", "merged")),
    ("dylora", "auto", {"network_args": "block_size=1"}, ("peft", "kohya", "merged")),
    ("full", "auto", {"target_modules": "to_q to_k"}, ("peft", "kohya", "merged")),
    ("loha", "lycoris", {}, ("peft", "kohya", "merged")),
    ("lokr", "lycoris", {}, ("peft", "kohya", "merged")),
    # rank 1 with both factors low-rank: scale alpha / rank = 8 makes a wrongly applied scale visible
    ("lokr", "lycoris", {"rank": 1, "lokr_decompose_both": True}, ("peft", "kohya", "merged")),
    ("lokr", "auto", {"rank": 1, "lokr_decompose_both": True}, ("peft", "kohya", "merged")),
]


def _layers(unet, names) -> list[torch.nn.Module]:
    return [m for n, m in unet.named_modules() if any(n == t or n.endswith("." + t) for t in names)
            and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def expected_trainable(kind: str, backend: str, unet, extra: dict) -> int:
    """What each method's definition gives for rank 4 on the targeted layers of the base UNet."""
    from lycoris.functional.general import factorization

    r = extra.get("rank", RANK)
    linear = _layers(unet, extra.get("target_modules", " ".join(ATTENTION)).split())
    io = [(m.in_features, m.out_features) for m in linear]
    if kind in ("lora", "dylora"):
        return sum(r * (i + o) for i, o in io)
    if kind == "dora":  # + one magnitude per output row
        return sum(r * (i + o) + o for i, o in io)
    if kind == "loha":  # two rank-r products
        return sum(2 * r * (i + o) for i, o in io)
    if kind == "glora":  # W' = W + W A + B, A: in x in at rank r, B: out x in at rank r
        return sum(r * (3 * i + o) for i, o in io)
    if kind == "lokr":  # kron(w1, w2), w1: (a, c), w2: (b, d) with out = a b, in = c d
        total = 0
        for i, o in io:
            (a, b), (c, d) = factorization(o, -1), factorization(i, -1)
            if extra.get("lokr_decompose_both"):  # both factors as rank-r products
                total += r * (a + c) + r * (b + d)
            else:  # full factors at this size
                total += a * c + b * d
        return total
    if kind == "ia3":  # one scale per output
        return sum(o for _, o in io)
    if kind == "full":  # the whole weight and bias of each targeted layer
        return sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in linear)
    if kind == "oft" and backend == "peft":  # per r-block of inputs: a skew-symmetric r x r (upper triangle)
        return sum(i // r * r * (r - 1) // 2 for i, _ in io)
    if kind == "oft":  # LyCORIS Diag-OFT: r x r blocks over the outputs
        return sum(o * r for _, o in io)
    if kind == "boft" and backend == "peft":  # one butterfly stage of r x r blocks over inputs + output scale
        return sum(i * r + o for i, o in io)
    if kind == "boft":  # LyCORIS BOFT: log2(out / r) + 1 butterfly stages of r x r blocks over the outputs
        return sum((int(math.log2(o // r)) + 1) * o * r for _, o in io)
    if kind == "locon":
        convs = _layers(unet, CONV)
        total = sum(r * (i + o) for i, o in io)
        for conv in convs:
            rank = r if conv.kernel_size == (1, 1) else CONV_RANK
            total += rank * (conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] + conv.out_channels)
        return total
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,backend,extra,formats", TABLE, ids=[f"{k}-{b}" for k, b, _, _ in TABLE])
def test_adapter_type_trains_saves_and_exports(tmp_path, kind, backend, extra, formats):
    from diffusers import UNet2DConditionModel

    from studio.adapters.export import finish_exports
    from studio.adapters.writer import read_adapter_folder

    cfg = sd15_config(tmp_path, {"type": kind, "backend": backend, **extra})
    family, handle = build(cfg)
    base_unet = UNet2DConditionModel.from_pretrained(family.model_path, subfolder="unet")
    assert handle.backend == cfg.adapter.backend_for(cfg.model.family)
    n_trainable = sum(p.numel() for p in handle.trainable_params())
    assert n_trainable == expected_trainable(kind, handle.backend, base_unet, extra)

    before = output(family, handle)
    train_step(family, handle)
    after = output(family, handle)
    assert rel(after, before) > 1e-4, "one optimizer step did not change the output"

    # save -> a fresh model with the same adapter -> load: same output
    handle.save(tmp_path / "saved", step=1)
    family2, handle2 = build(cfg)
    missing = handle2.load_component_state_dicts(read_adapter_folder(tmp_path / "saved", handle2))
    assert not missing
    assert rel(output(family2, handle2), after) < 1e-5

    # exports at the end of a run, each loaded back by its target loader
    cfg.adapter.merge_after_training = True
    results = finish_exports(handle, tmp_path / "run", step=1)
    assert [r.fmt for r in results] == list(formats)
    for result in results:
        assert result.ok, result.summary()
        assert result.effect_error is not None, f"{result.fmt}: the check compared nothing measurable"
        assert result.effect_error < 1e-3 and result.rel_error < 1e-5
