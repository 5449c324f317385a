"""Music settings: per-variant values (FIELDS §7), what turbo refuses, presets, fine-tune variants."""
from __future__ import annotations

import json

import pytest

from studio.config import ConfigError, load_config
from studio.config.presets import load_preset_data
from studio.config.sections.music import music_settings
from tests.conftest import REPO


def flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def acestep(**sections) -> dict:
    cfg = {"model": {"family": "acestep", "path": "tiny:acestep"}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def test_turbo_and_base_presets_differ_exactly_in_the_variant_table():
    turbo = flat(json.loads((REPO / "presets/acestep-turbo-lora.json").read_text()))
    base = flat(json.loads((REPO / "presets/acestep-base-lora.json").read_text()))
    differing = {k for k in turbo.keys() | base.keys() if turbo.get(k) != base.get(k)}
    # FIELDS §7: shift, inference steps, CFG dropout (disabled for turbo); plus which model it is.
    assert differing == {"description", "model.path", "model.variant", "loss.shift", "loss.num_inference_steps",
                         "loss.cfg_ratio"}
    t = music_settings(load_config(load_preset_data("acestep-turbo-lora"), []))
    b = music_settings(load_config(load_preset_data("acestep-base-lora"), []))
    assert (t.shift, t.num_inference_steps, t.cfg_ratio, t.timesteps) == (3.0, 8, 0.0, "discrete")
    assert (b.shift, b.num_inference_steps, b.cfg_ratio, b.timesteps) == (1.0, 50, 0.15, "logit_normal")


def test_every_music_preset_validates():
    for name in ("acestep-turbo-lora", "acestep-base-lora", "tiny-acestep-lora"):
        assert load_config(load_preset_data(name), []).model.family == "acestep"


@pytest.mark.parametrize("override, field", [({"cfg_ratio": 0.15}, "loss.cfg_ratio"),
                                             ({"loss_weighting": "min_snr"}, "loss.loss_weighting"),
                                             ({"snr_gamma": 5.0}, "loss.snr_gamma")])
def test_turbo_refuses_cfg_dropout_and_min_snr(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(acestep(model={"variant": "turbo"}, loss=override), [])
    assert field in str(err.value) and "turbo" in str(err.value)
    base = music_settings(load_config(acestep(model={"variant": "base"}, loss=override), []))
    assert base.cfg_ratio == override.get("cfg_ratio", 0.15)


def test_cli_names_the_field_when_cfg_dropout_is_enabled_for_turbo(capsys):
    from studio.cli import main

    code = main(["train", str(REPO / "presets/acestep-turbo-lora.json"), "--set", "loss.cfg_ratio=0.2"])
    assert code == 2
    assert "loss.cfg_ratio" in capsys.readouterr().err


def test_min_snr_defaults_gamma_to_five_for_base():
    s = music_settings(load_config(acestep(model={"variant": "sft"}, loss={"loss_weighting": "min_snr"}), []))
    assert (s.loss_weighting, s.snr_gamma, s.shift, s.num_inference_steps) == ("min_snr", 5.0, 1.0, 50)


def test_fine_tune_needs_its_base_variant_unless_its_config_says(tmp_path):
    with pytest.raises(ConfigError, match="model.base_variant"):
        load_config(acestep(model={"variant": "my-finetune", "path": str(tmp_path)}), [])
    named = load_config(acestep(model={"variant": "my-finetune", "base_variant": "sft", "path": str(tmp_path)}), [])
    assert music_settings(named).base_variant == "sft"
    (tmp_path / "my-finetune" / "transformer").mkdir(parents=True)
    (tmp_path / "my-finetune" / "transformer" / "config.json").write_text('{"is_turbo": true}')
    detected = load_config(acestep(model={"variant": "my-finetune", "path": str(tmp_path)}), [])
    assert music_settings(detected).is_turbo
    with pytest.raises(ConfigError, match="contradicts"):
        load_config(acestep(model={"variant": "base", "base_variant": "turbo"}), [])


def test_ace_step_projection_names_map_to_diffusers_layers():
    cfg = load_config(acestep(adapter={"target_modules": "q_proj k_proj v_proj o_proj gate_proj",
                                       "attention_type": "both", "self_target_modules": ["q_proj"]}), [])
    assert cfg.adapter.target_modules == ["to_q", "to_k", "to_v", "to_out.0", "gate_proj"]
    assert cfg.adapter.self_target_modules == ["to_q"]


def test_short_chunks_are_warned_about():
    cfg = load_config(acestep(data={"chunk_seconds": 30}), [])
    assert any("chunk_seconds 30" in note for note in cfg.notes)
    assert not any("chunk_seconds" in n for n in load_config(acestep(data={"chunk_seconds": 90}), []).notes)
