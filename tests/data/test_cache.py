"""Preprocessing into the cache, incremental rebuilds, and training that never runs the frozen encoders."""
from __future__ import annotations

import json
import os

import pytest
import torch
from diffusers import AutoencoderKL

from studio.config import finalize_job, load_config
from studio.data.image_cache import ImageCache, attach_image_cache
from studio.data.image_source import DataError, cache_root
from studio.data.preflight import scan_image_job
from studio.commands.preprocess import cache_status, load_encoders, run_preprocess
from studio.families.sd import SdFamily
from studio.commands.train import run_training
from tests.conftest import read_progress, run_studio
from tests.data.conftest import TINY_BASE, add_image, data_config

pytestmark = pytest.mark.slow
BAD = ("truncated.png", "empty.jpg", "notes.png", "uncaptioned.png", "huge.png")


@pytest.fixture(scope="module")
def encoders(tiny_sd15, tmp_path_factory):
    """The tiny SD 1.5 family with its encoders loaded once for the module."""
    folder = tmp_path_factory.mktemp("enc")
    add_image(folder, "a.png")
    return load_encoders(data_config(folder))


def build(cfg, family) -> tuple[ImageCache, int]:
    family.cfg = cfg
    cache = ImageCache(cfg, family, scan_image_job(cfg).items)
    return cache, cache.build(family, drop_others=True)


def snapshot(cfg) -> tuple[dict, dict]:
    """(entry JSON per key, tensor file -> mtime)."""
    root = cache_root(cfg)
    entries = json.loads((root / "manifest.json").read_text())["entries"]
    files = {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*.safetensors*")}
    return {k: json.dumps(v, sort_keys=True) for k, v in entries.items()}, files


def test_rebuild_encodes_only_what_changed(good_folder, encoders):
    cfg = data_config(good_folder, random_flip=True)
    cache, encoded = build(cfg, encoders)
    assert encoded == 6 and cache.report().is_fresh
    entries, files = snapshot(cfg)
    assert len(entries) == 6 and len(files) == 12  # latents (both orientations) + text per image
    manifest_time = (cache_root(cfg) / "manifest.json").stat().st_mtime_ns
    _, encoded = build(cfg, encoders)
    assert encoded == 0 and snapshot(cfg) == (entries, files)
    assert (cache_root(cfg) / "manifest.json").stat().st_mtime_ns == manifest_time  # not even rewritten

    add_image(good_folder, "img3.png", 160, 80, caption="picture number 3", seed=42)  # new pixels, same caption
    cache, encoded = build(cfg, encoders)
    assert encoded == 1
    after, after_files = snapshot(cfg)
    assert after["img3.png"] != entries["img3.png"]
    assert {k: v for k, v in after.items() if k != "img3.png"} == {k: v for k, v in entries.items() if k != "img3.png"}
    unchanged = {f: t for f, t in files.items() if f in after_files}
    assert len(unchanged) == 11 and all(after_files[f] == t for f, t in unchanged.items())  # old latents file gone

    old_parts = json.loads(after["img4.png"])["parts"]
    (good_folder / "img5.png").unlink()
    (good_folder / "img4.txt").write_text("a new caption", encoding="utf-8")
    cache, encoded = build(cfg, encoders)
    entries, files = snapshot(cfg)
    assert encoded == 1 and "img5.png" not in entries and len(files) == 10  # the removed image dropped out
    parts = json.loads(entries["img4.png"])["parts"]
    assert parts["latents"] == old_parts["latents"] and parts["text"] != old_parts["text"]  # caption edit: text only
    assert cache.report().is_fresh

    bigger = data_config(good_folder, random_flip=True, resolution=96)
    report = ImageCache(bigger, encoders, scan_image_job(bigger).items).report()
    assert report.stale == 5 and "settings changed (views)" in report.reasons[0][1]


def test_cached_tensors_match_a_direct_encoding(good_folder, encoders):
    cfg = data_config(good_folder)
    cache, _ = build(cfg, encoders)
    cache.activate()
    item = cache.items[2]
    latents, _ = cache.latents(item, 64, flip=False)
    from studio.data.images import load_view

    view = cache.views[item.key][0]
    pixels, _ = load_view(item.path, view.plan, False, False)
    assert torch.allclose(latents, encoders.encode_images(pixels[None])[0], atol=1e-5)
    assert latents.shape == (4, view.plan.target[1] // 8, view.plan.target[0] // 8)
    text = cache.text(item)["prompt_embeds"]
    assert torch.allclose(text, encoders.encode_text([item.caption])["prompt_embeds"][0], atol=1e-5)


def test_stale_cache_is_named_or_refreshed_by_setting(good_folder, encoders):
    cfg = data_config(good_folder, cache_mode="on")
    build(cfg, encoders)
    add_image(good_folder, "img1.png", 80, 80, caption="picture number 1", seed=77)
    encoders.cfg = data_config(good_folder, cache_mode="on", stale_cache="error")
    with pytest.raises(DataError) as err:
        attach_image_cache(encoders)
    assert "img1.png: latents: the input changed" in str(err.value) and "python -m studio preprocess" in str(err.value)
    encoders.cfg = cfg
    cache = attach_image_cache(encoders)
    assert cache.serves_latents and cache.serves_text and cache.report().is_fresh
    assert encoders.encoders_on_device == (True, True)  # placed for the refresh; the family re-places after


def test_training_from_a_fresh_cache_never_calls_the_vae_or_text_encoders(good_folder, encoders, tmp_path, monkeypatch,
                                                                 caplog):
    build(data_config(good_folder, caption_dropout=0.5), encoders)

    def refuse(*args, **kwargs):
        raise AssertionError("an encoder ran although the cache is fresh")

    monkeypatch.setattr(AutoencoderKL, "encode", refuse)
    monkeypatch.setattr(SdFamily, "encode_text", refuse)  # sampling encodes prompts through the pipeline instead
    with pytest.raises(AssertionError, match="encoder ran"):  # the spies do catch encoding from pixels / captions
        encoders.loss({"pixel_values": torch.zeros(1, 3, 64, 64), "caption": ["x"]}, torch.Generator())
    with pytest.raises(AssertionError, match="encoder ran"):
        encoders.loss({"latents": torch.zeros(1, 4, 8, 8), "caption": ["x"]}, torch.Generator())
    base = {k: dict(v) for k, v in TINY_BASE.items()}
    base["data"].update(path=str(good_folder), caption_dropout=0.5)
    base["sampling"] = {"prompts": [{"prompt": "a picture", "seed": 1}], "at_end": True, "default_steps": 2}
    run_cfg = finalize_job(load_config(base), name="from-cache")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with caplog.at_level("INFO", logger="studio.data"):
        assert run_training(run_cfg, run_dir) == 0, read_progress(run_dir)[-1]
    assert "latents cached, text embeddings cached" in caplog.text
    records = read_progress(run_dir)
    assert records[-1]["event"] == "done" and [r["step"] for r in records if "loss" in r][-1] == 4
    assert list((run_dir / "samples").glob("*.png"))  # sampling still has its decoder
    args = json.loads((run_dir / "training_args.json").read_text())
    assert len(args["dataset_fingerprint"]) == 16 and args["dataset_cache"]["latents"] is True
    # six images plus the empty caption's embedding (caption dropout)
    assert cache_status(run_cfg).as_dict() == {"fresh": 7, "stale": 0, "missing": 0, "removed": 0}


def test_preprocess_cli_names_bad_files_trains_on_the_rest_and_refuses_on_error(messy_folder, tiny_sd15, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY_BASE, "data": {**TINY_BASE["data"], "path": str(messy_folder)}}))
    run_dir = tmp_path / "pre"
    result = run_studio("preprocess", str(config), "--set", f"job.output_dir={run_dir}", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (run_dir / "console.log").read_text()
    for name in BAD:
        assert str(messy_folder / name) in log
    records = read_progress(run_dir)
    scan = next(r for r in records if r.get("event") == "scan")
    assert scan["images"] == 3 and {os.path.basename(f["path"]) for f in scan["bad_files"]} >= set(BAD)
    steps = [r for r in records if "step" in r and "total" in r]
    assert steps[-1]["step"] == steps[-1]["total"] == 3 and all({"elapsed_s", "eta_s"} <= set(r) for r in steps)
    assert records[-1]["event"] == "done" and records[-1]["encoded"] == 3
    manifest = json.loads((messy_folder / ".studio_cache" / "manifest.json").read_text())
    assert sorted(manifest["entries"]) == ["good0.png", "good1.png", "good2.png"]

    cfg = finalize_job(load_config(config))
    assert run_preprocess(cfg, run_dir) == 0  # the rerun: nothing to encode, the model is not even loaded
    rerun = read_progress(run_dir)[len(records):]
    assert rerun[-1]["encoded"] == 0 and not any(r.get("event") == "loading" for r in rerun)

    refused = tmp_path / "refused"
    refused.mkdir()
    assert run_preprocess(finalize_job(load_config(config, ["data.on_bad_file=error"])), refused) == 1
    error = read_progress(refused)[-1]
    assert error["event"] == "error" and all(str(messy_folder / name) in error["message"] for name in BAD)


def test_sdxl_trains_from_its_cache_on_non_square_buckets(good_folder, tiny_sdxl, tmp_path):
    base = {k: dict(v) for k, v in TINY_BASE.items()}
    base["model"] = {"family": "sdxl", "path": "tiny:sdxl"}
    base["data"].update(path=str(good_folder), cache_mode="on")
    base["training"]["max_steps"] = 3
    cfg = finalize_job(load_config(base), name="xl")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert run_training(cfg, run_dir) == 0, read_progress(run_dir)[-1]  # `on`: built before training
    manifest = json.loads((good_folder / ".studio_cache" / "manifest.json").read_text())
    entry = manifest["entries"]["img2.png"]
    assert entry["parts"]["text"]["settings"]["family"] == "sdxl"
    from studio.data.manifest import read_tensors

    text = read_tensors(good_folder / ".studio_cache" / entry["parts"]["text"]["file"])
    assert set(text) == {"prompt_embeds", "pooled_prompt_embeds"}
    views = entry["parts"]["latents"]["settings"]["views"]
    assert views[0][1] != views[0][2]  # a landscape bucket, not a square
