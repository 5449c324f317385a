"""The Train tab's GPU-memory line and the VRAM picker (studio/ui/estimates.py), on the tiny presets."""
from __future__ import annotations

import os

from studio.families.tiny import ensure_tiny_model
from studio.ui.estimates import fit_to_gpu, vram_markdown
from studio.ui.form_spec import config_from_values, values_from_config
from studio.ui.train_actions import preset_config


def test_side_panel_shows_the_estimate_and_follows_the_settings():
    ensure_tiny_model("sd15", os.environ["STUDIO_HOME"])
    config = preset_config("tiny-sd15-lora")
    config.setdefault("memory", {})["gpu_memory_gb"] = 8
    text = vram_markdown(config)
    assert "**GPU memory** about" in text and "of 8 GB: **fits**" in text and "Time per step" in text
    config["memory"]["gpu_memory_gb"] = 0.25  # smaller than the CUDA context alone
    assert "**does not fit**" in vram_markdown(config)
    config["model"]["path"] = "/nonexistent/model"
    assert "unknown here" in vram_markdown(config)
    config["training"]["batch_size"] = -1
    assert "unknown until the settings are valid" in vram_markdown(config)


def test_picker_merges_the_fitting_settings_into_the_form_values():
    ensure_tiny_model("causal_lm", os.environ["STUDIO_HOME"])
    config = config_from_values(values_from_config(preset_config("tiny-llm-sft")))
    fitted, message = fit_to_gpu(config, 24)
    assert fitted["memory"]["gpu_memory_gb"] == 24.0 and fitted["memory"]["gradient_checkpointing"] == "auto"
    assert "For a 24 GB GPU" in message and "fits" in message
    assert config_from_values(values_from_config(fitted))["memory"]["gpu_memory_gb"] == 24.0  # the form takes it
    config["model"]["path"] = "/nonexistent/model"
    assert fit_to_gpu(config, 24)[0] is None
