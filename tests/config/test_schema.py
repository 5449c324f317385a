import json

import pytest

from studio.config import ConfigError, JobConfig, load_config
from studio.config.kv import parse_key_values
from studio.config.presets import list_presets, load_preset, load_preset_data
from tests.conftest import REPO, run_studio

BASE = {"model": {"path": "tiny:sd15"}, "data": {"path": "demo:images"}}


def _iter_fields(model_cls, prefix=""):
    for name, field in model_cls.model_fields.items():
        yield f"{prefix}{name}", field
        ann = field.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            yield from _iter_fields(ann, f"{prefix}{name}.")


def test_every_preset_validates():
    presets = list_presets()
    assert {"tiny-sd15-lora", "sd15-lora", "sdxl-lora"} <= {p["name"] for p in presets}
    for preset in presets:
        cfg = load_preset(preset["name"])
        assert isinstance(cfg, JobConfig)
        assert preset["description"], f"{preset['name']} needs a description for the UI"


def test_a_typo_key_in_a_preset_fails_naming_the_field():
    data = load_preset_data("tiny-sd15-lora")
    data["training"]["learning_rat"] = 0.1
    with pytest.raises(ConfigError) as err:
        load_config(data)
    assert "training.learning_rat" in str(err.value)


def test_every_setting_has_help_text_and_ui_group():
    for path, field in _iter_fields(JobConfig):
        if path.count(".") == 0:
            continue  # sections themselves
        assert field.description and len(field.description) > 15, f"{path} needs a help text"
        assert field.json_schema_extra["ui"]["group"] in ("essentials", "advanced"), path


def test_errors_are_collected_and_name_each_field():
    bad = {"model": {"path": ""}, "training": {"learning_rate": -1, "batch_size": 0}}
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    fields = err.value.by_field
    assert {"training.learning_rate", "training.batch_size"} <= set(fields)


def test_cross_field_rules():
    with pytest.raises(ConfigError) as err:
        load_config({**BASE, "checkpointing": {"resume_from": "x", "auto_resume": True},
                     "evaluation": {"strategy": "steps"}})
    assert {"checkpointing.resume_from", "evaluation.strategy"} <= set(err.value.by_field)
    cfg = load_config({**BASE, "optimizer": {"name": "prodigy"}, "scheduler": {"name": "cosine"}})
    assert cfg.scheduler.name == "constant"
    assert any("prodigy" in note.lower() for note in cfg.notes)


def test_set_overrides_parse_json_then_string():
    cfg = load_config(BASE, ["training.max_steps=7", "job.name=my run", "adapter.target_modules=to_q to_k",
                             "sampling.prompts=[\"a cat\"]"])
    assert cfg.training.max_steps == 7 and cfg.job.name == "my run"
    assert cfg.adapter.target_modules == ["to_q", "to_k"]
    assert cfg.sampling.prompts[0].prompt == "a cat"
    with pytest.raises(ConfigError):
        load_config(BASE, ["nosuchsection.x=1"])


@pytest.mark.parametrize("text", ["__import__('os').system('x')", "a==b", "rank=", "=3", "lr=1;rm"])
def test_key_value_parser_rejects_anything_but_plain_values(text):
    with pytest.raises(ValueError):
        parse_key_values(text)


def test_key_value_parser_types():
    assert parse_key_values("d_coef=0.5, safeguard_warmup=true decouple=False k=3 mode=fast-1") == {
        "d_coef": 0.5, "safeguard_warmup": True, "decouple": False, "k": 3, "mode": "fast-1"}


@pytest.mark.parametrize("override, field", [
    ("model.famly=sd15", "model.famly"),
    ("training.learning_rate=-0.001", "training.learning_rate"),
    ("data.path=/no/such/folder", "data.path"),
])
def test_cli_config_errors_exit_2_naming_the_field(override, field, tmp_path):
    result = run_studio("train", str(REPO / "presets/tiny-sd15-lora.json"), "--set", override,
                        "--set", f"job.output_dir={tmp_path / 'run'}", timeout=120)
    assert result.returncode == 2, result.stderr
    assert field in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "progress.jsonl").exists()  # nothing started


def test_saved_config_roundtrips(tmp_path):
    cfg = load_config(BASE, ["training.seed=7"])
    again = load_config(json.loads(cfg.model_dump_json()))
    assert again.model_dump() == cfg.model_dump()


def test_trainable_families_match_the_family_registry():
    from studio.config.fields import TRAINABLE_FAMILIES
    from studio.registry.families import FAMILIES

    assert set(TRAINABLE_FAMILIES) == {f for f, info in FAMILIES.items() if info.family_class}
    for family in (f for f, info in FAMILIES.items() if not info.family_class):  # none once all have one
        with pytest.raises(ConfigError) as err:
            load_config({**BASE, "model": {"family": family, "path": f"tiny:{family}"}})
        assert "model.family" in err.value.by_field
