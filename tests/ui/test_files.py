"""Downloads and uploads through the browser: what is offered, what is refused, nothing overwritten."""
from __future__ import annotations

import zipfile

import pytest
from PIL import Image

from studio.queue import JobStore
from studio.ui.context import StudioContext
from studio.ui.files import UploadError, read_caption, run_downloads, save_upload, write_caption


@pytest.fixture
def ctx(home):
    home.mkdir(parents=True)
    return StudioContext(store=JobStore(home / "queue.db"))


def _png(path):
    Image.new("RGB", (8, 8), "red").save(path)
    return path


def test_upload_files_and_zip_land_under_studio_home(ctx, tmp_path):
    img = _png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a red square")
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as zf:
        zf.write(_png(tmp_path / "b.png"), "sub/b.png")
        zf.writestr("__MACOSX/._b.png", "junk")
    folder, count = save_upload(ctx, "squares", [img, tmp_path / "a.txt", tmp_path / "more.zip"])
    assert folder == (ctx.home / "datasets" / "squares").resolve() and count == 3
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == \
        ["a.png", "a.txt", "sub/b.png"]
    assert read_caption(folder, folder / "a.png") == "a red square"
    write_caption(folder, folder / "sub/b.png", "  a second square ")
    assert (folder / "sub/b.txt").read_text() == "a second square\n"
    with pytest.raises(UploadError, match="not a file of the dataset"):
        write_caption(folder, tmp_path / "a.png", "outside")

    # The same file again: refused, the saved caption is untouched.
    (tmp_path / "a.txt").write_text("changed")
    with pytest.raises(UploadError, match="a.txt already exists"):
        save_upload(ctx, "squares", [tmp_path / "a.txt"])
    assert (folder / "a.txt").read_text() == "a red square"


@pytest.mark.parametrize("member, message", [("../../evil.png", "outside the dataset folder"),
                                             ("run.sh", "not a dataset file")])
def test_bad_zip_is_refused_before_anything_is_written(ctx, tmp_path, member, message):
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.write(_png(tmp_path / "ok.png"), "ok.png")
        zf.writestr(member, "x")
    with pytest.raises(UploadError, match=message):
        save_upload(ctx, "bad", [tmp_path / "bad.zip"])
    assert not (ctx.home / "datasets" / "bad").exists()
    assert not (ctx.home / "evil.png").exists()


def test_dataset_name_is_checked(ctx, tmp_path):
    with pytest.raises(UploadError, match="dataset name '../x'"):
        save_upload(ctx, "../x", [_png(tmp_path / "a.png")])


def test_run_downloads_offer_adapter_kohya_and_a_zip_without_optimizer_state(ctx):
    run = ctx.home / "runs" / "r1"
    (run / "checkpoint-10").mkdir(parents=True)
    (run / "adapter_model.safetensors").write_bytes(b"a")
    (run / "r1_kohya.safetensors").write_bytes(b"k")
    (run / "checkpoint-10" / "optimizer.pt").write_bytes(b"o" * 100)
    (run / "checkpoint-10" / "adapter_model.safetensors").write_bytes(b"c")
    paths, words = run_downloads(ctx, run)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["adapter_model.safetensors", "r1_kohya.safetensors", "r1-run.zip"]
    assert "ComfyUI" in words
    names = zipfile.ZipFile(paths[-1]).namelist()
    assert "r1/checkpoint-10/adapter_model.safetensors" in names and "r1/checkpoint-10/optimizer.pt" not in names


def test_files_the_allow_deny_rule_blocks_are_not_offered(ctx):
    run = ctx.home / "secrets" / "run"  # inside STUDIO_HOME, but a blocked folder
    run.mkdir(parents=True)
    (run / "adapter_model.safetensors").write_bytes(b"a")
    paths, words = run_downloads(ctx, run)
    assert paths == [] and "outside the folders" in words
    assert not (ctx.home / "exports").exists()  # not even zipped


def test_config_import_reads_configs_and_run_records_and_names_bad_files(tmp_path):
    import json

    from studio.config import ConfigError
    from studio.ui.tabs.config_files import read_config_file
    from studio.ui.train_actions import preset_config

    config = preset_config("tiny-sd15-lora")
    (tmp_path / "c.json").write_text(json.dumps(config))
    (tmp_path / "training_args.json").write_text(json.dumps({"config": config, "versions": {}}))
    for name in ("c.json", "training_args.json"):
        assert read_config_file(str(tmp_path / name))["adapter"]["rank"] == 4
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json: not valid JSON"):
        read_config_file(str(tmp_path / "broken.json"))
    (tmp_path / "bad.json").write_text(json.dumps({**config, "adapter": {**config["adapter"], "rank": 0}}))
    with pytest.raises(ConfigError, match="adapter.rank"):
        read_config_file(str(tmp_path / "bad.json"))
