"""The preflight scan names every unusable file with its reason; `on_bad_file` decides what happens."""
from __future__ import annotations

import json
import os

import pytest

from studio.data import scan as scan_module
from studio.data.image_source import DataError, build_image_dataset, cache_root
from studio.data.preflight import scan_image_job
from tests.data.conftest import add_image, data_config


def reasons_by_name(report) -> dict[str, str]:
    return {f.path.name: f.reason for f in report.bad}


def test_scan_names_each_bad_file_with_its_reason(messy_folder):
    report = scan_image_job(data_config(messy_folder))
    bad = reasons_by_name(report)
    assert set(bad) == {"truncated.png", "empty.jpg", "notes.png", "uncaptioned.png", "huge.png", "anim.gif"}
    assert "truncated" in bad["truncated.png"]
    assert "0 bytes" in bad["empty.jpg"]
    assert "text" in bad["notes.png"] and "PNG" in bad["notes.png"]
    assert "no caption" in bad["uncaptioned.png"] and "uncaptioned.txt" in bad["uncaptioned.png"]
    assert "too large" in bad["huge.png"] and "20000x256" in bad["huge.png"]
    assert "unsupported format .gif" in bad["anim.gif"]
    assert sorted(it.path.name for it in report.items) == ["good0.png", "good1.png", "good2.png"]


def test_skip_trains_on_the_rest_and_error_refuses(messy_folder):
    dataset = build_image_dataset(data_config(messy_folder, on_bad_file="skip"))
    assert len(dataset) == 3 and len(dataset.bad_files) == 6
    with pytest.raises(DataError) as err:
        scan_image_job(data_config(messy_folder, on_bad_file="error"))
    message = str(err.value)
    assert "on_bad_file=error" in message and "6 unusable" in message
    for name in ("truncated.png", "empty.jpg", "notes.png", "uncaptioned.png", "huge.png", "anim.gif"):
        assert str(messy_folder / name) in message


def test_size_limits_follow_the_settings(tmp_path):
    add_image(tmp_path / "d", "small.png", 40, 40)
    add_image(tmp_path / "d", "ok.png", 96, 96)
    report = scan_image_job(data_config(tmp_path / "d"))
    assert reasons_by_name(report) == {"small.png": "too small: 40x40 px (data.min_image_side = 64)"}
    report = scan_image_job(data_config(tmp_path / "d", min_image_side=32, max_image_side=90))
    assert list(reasons_by_name(report)) == ["ok.png"] and "too large" in reasons_by_name(report)["ok.png"]


def test_mislabelled_but_readable_file_is_kept_with_a_warning(tmp_path):
    folder = tmp_path / "d"
    add_image(folder, "photo.jpg", 96, 96)
    os.rename(folder / "photo.jpg", folder / "photo.png")  # JPEG bytes behind a .png name
    report = scan_image_job(data_config(folder))
    assert not report.bad and len(report.items) == 1
    assert "JPEG data in a .png file" in report.warnings[0].reason


def test_rescan_of_an_unchanged_folder_decodes_nothing(good_folder, monkeypatch):
    cfg = data_config(good_folder)
    scan_image_job(cfg)
    facts = json.loads((cache_root(cfg) / "scan.json").read_text())["files"]
    assert len(facts) == 6 and all(len(f["sha256"]) == 64 for f in facts.values())
    decoded = []
    monkeypatch.setattr(scan_module, "_PROCESS_FACTS", {})
    real = scan_module.inspect_file
    monkeypatch.setattr(scan_module, "inspect_file", lambda p, st: decoded.append(p.name) or real(p, st))
    scan_image_job(cfg)
    assert decoded == []
    add_image(good_folder, "img0.png", 96, 96, caption="picture number 0", seed=99)  # same name, new pixels
    scan_image_job(cfg)
    assert decoded == ["img0.png"]


def test_hidden_files_and_the_cache_folder_are_not_data(good_folder):
    (good_folder / ".DS_Store").write_bytes(b"\0\1junk")
    (good_folder / ".studio_cache").mkdir()
    add_image(good_folder / ".studio_cache", "leftover.png", 96, 96)
    (good_folder / "README.md").write_text("not data", encoding="utf-8")
    report = scan_image_job(data_config(good_folder))
    assert not report.bad and len(report.items) == 6


def test_missing_folder_is_named(tmp_path):
    cfg = data_config(tmp_path / "d", datasets=[{"path": str(tmp_path / "nowhere")}])
    add_image(tmp_path / "d", "a.png")
    with pytest.raises(DataError, match=r"data\.datasets\.0\.path: folder not found"):
        scan_image_job(cfg)


def test_preprocess_cli_with_a_missing_folder_is_a_config_error(tmp_path, capsys):
    import json as json_module

    from studio.cli import main
    from tests.data.conftest import TINY_BASE

    config = tmp_path / "config.json"
    config.write_text(json_module.dumps({**TINY_BASE, "data": {"path": str(tmp_path / "nowhere")}}))
    assert main(["preprocess", str(config), "--set", f"job.output_dir={tmp_path / 'run'}"]) == 2
    assert "data.path: not found" in capsys.readouterr().err
