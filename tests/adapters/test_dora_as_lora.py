"""A DoRA run's change re-expressed as a plain LoRA for ComfyUI / A1111 (studio/adapters/dora_lora.py): the
file's layers, applied as LoRA, match PEFT's merged DoRA within the error the export record reports; at full
rank they are exact and the file reproduces the trained model through diffusers. The kohya DoRA file's
record and the console say how ComfyUI reads DoRA."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from tests.adapters.conftest import build, sd15_config, train_step


def _run(tmp_path, rank: int):
    from studio.adapters.export import finish_exports

    cfg = sd15_config(tmp_path, {"type": "dora", "dora_as_lora_rank": rank})
    family, handle = build(cfg)
    train_step(family, handle, lr=3e-2, steps=2)
    # PEFT's own merge of the trained DoRA (on a copy): the weights the re-expression must give
    merged = copy.deepcopy(handle.components["unet"]).merge_and_unload() if hasattr(
        handle.components["unet"], "merge_and_unload") else _merged_copy(handle.components["unet"])
    results = {r.fmt: r for r in finish_exports(handle, tmp_path / "run", step=2)}
    return family, handle, merged, results


def _merged_copy(net):
    from peft.tuners.tuners_utils import BaseTunerLayer

    net = copy.deepcopy(net)
    for module in net.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    return net


def _layer_errors(handle, merged, file) -> dict[str, float]:
    """Per layer: |up @ down * alpha/rank - (merged DoRA weight - base weight)| / |merged - base|."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    weights = load_file(str(file))
    merged_params = dict(merged.named_modules())
    out = {}
    for path, layer in handle.components["unet"].named_modules():
        if not isinstance(layer, BaseTunerLayer):
            continue
        name = "lora_unet_" + path.replace(".", "_")
        up, down = weights[f"{name}.lora_up.weight"], weights[f"{name}.lora_down.weight"]
        scale = weights[f"{name}.alpha"].item() / down.shape[0]
        base = layer.get_base_layer().weight
        target = merged_params[path].get_base_layer().weight if isinstance(merged_params[path], BaseTunerLayer) \
            else merged_params[path].weight
        delta = target - base
        out[name] = ((up @ down * scale - delta).norm() / delta.norm()).item()
    return out


def test_low_rank_file_matches_the_merged_dora_within_its_reported_error(tmp_path):
    family, handle, merged, results = _run(tmp_path, rank=2)
    assert set(results) == {"peft", "kohya", "dora_lora"} and all(r.ok for r in results.values())
    record = results["dora_lora"].as_event()
    approx = record["approximation"]
    assert approx["rank"] == 2 and approx["layers"] == 56
    assert 1e-3 < approx["max_rel_error"] < 1 and 0 < approx["mean_rel_error"] <= approx["max_rel_error"]
    assert any("rank-2 LoRA re-expression" in n for n in record["notes"])
    file = tmp_path / "run" / "tiny_dora_dora_as_lora_kohya.safetensors"
    assert record["path"] == str(file) and file.is_file()
    weights = load_file(str(file))
    assert not any("dora_scale" in k for k in weights) and all(
        v.shape[0] == 2 for k, v in weights.items() if k.endswith("lora_down.weight"))
    errors = _layer_errors(handle, merged, file)
    assert len(errors) == 56
    assert max(errors.values()) == pytest.approx(approx["max_rel_error"], abs=1e-5)
    assert sum(errors.values()) / len(errors) == pytest.approx(approx["mean_rel_error"], abs=1e-5)
    # the kohya DoRA file's record says how ComfyUI reads it, and names the alternative
    assert any("~28 %" in n and file.name in n for n in results["kohya"].notes)


def test_full_rank_file_is_exact_and_reproduces_the_trained_model(tmp_path):
    family, handle, merged, results = _run(tmp_path, rank=4096)
    result = results["dora_lora"]
    assert result.ok and result.approximation["max_rel_error"] < 1e-4
    assert result.loader == "diffusers load_lora_weights"  # a plain LoRA file: the loader every tool shares
    assert result.effect_error is not None and result.effect_error <= 1e-3  # the strict check passed
    errors = _layer_errors(handle, merged, tmp_path / "run" / "tiny_dora_dora_as_lora_kohya.safetensors")
    assert max(errors.values()) < 1e-4


def test_without_the_setting_the_dora_run_warns_and_writes_no_alternative(tmp_path):
    from studio.adapters.dora_lora import COMFYUI_DORA_NOTE

    family, handle, merged, results = _run(tmp_path, rank=0)
    assert set(results) == {"peft", "kohya"}
    assert COMFYUI_DORA_NOTE in results["kohya"].notes and "adapter.dora_as_lora_rank" in COMFYUI_DORA_NOTE
    assert not list((tmp_path / "run").glob("*_dora_as_lora_kohya.safetensors"))


def test_the_setting_is_refused_outside_dora():
    from studio.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config({"model": {"family": "sd15"}, "adapter": {"type": "lora", "dora_as_lora_rank": 8}})
    assert "type 'lora'" in err.value.by_field["adapter.dora_as_lora_rank"]
