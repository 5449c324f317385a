"""The Train tab's per-machine commands: hidden for one machine; with several, the lines the CLI prints
(`studio.distributed.machine_commands`), one per machine rank; what to fix while the config is invalid."""
from __future__ import annotations

from studio.ui.form_spec import field_specs, values_from_config
from studio.ui.machine_commands import machines_markdown
from studio.ui.train_actions import preset_config


def form_values(**settings) -> list:
    config = preset_config("tiny-sd15-lora")
    values = values_from_config(config)
    paths = [s.path for s in field_specs()]
    for path, value in settings.items():
        values[paths.index(path.replace("__", "."))] = value
    return values


def test_one_machine_shows_nothing(home):
    assert machines_markdown(form_values()) == ""


def test_each_machine_gets_its_command(home):
    text = machines_markdown(form_values(distributed__num_machines=3, distributed__main_process_ip="10.0.0.5"))
    assert "```bash" in text and "10.0.0.5" in text
    for rank in range(3):
        assert f"--set distributed.machine_rank={rank}" in text
    assert "machine_rank=3" not in text and text.count("python -m studio train ") == 3
    assert "/runs/" in text and "config.json" in text  # the run folder's config, as queued


def test_an_invalid_setting_is_named_instead(home):
    text = machines_markdown(form_values(distributed__num_machines=2))  # no main_process_ip
    assert "distributed.main_process_ip" in text and "```" not in text
