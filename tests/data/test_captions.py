"""Caption strategies and per-epoch caption variation."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from studio.config import ConfigError
from studio.data.captions import caption_from_filename, vary_caption
from studio.data.image_source import DataError, build_image_dataset
from studio.data.preflight import scan_image_job
from tests.data.conftest import add_image, data_config


def captions(dataset) -> dict[str, str]:
    return {it.path.name: it.caption for it in dataset.items}


def test_textfile_with_a_custom_extension(tmp_path):
    add_image(tmp_path / "d", "a.png", caption=None)
    (tmp_path / "d" / "a.caption").write_text("  a cat on a mat \n", encoding="utf-8")
    assert captions(build_image_dataset(data_config(tmp_path / "d", caption_extension=".caption"))) == \
        {"a.png": "a cat on a mat"}


def test_filename_and_instance_prompt(tmp_path):
    add_image(tmp_path / "d", "red_circle-on white (2).png", caption=None)
    assert captions(build_image_dataset(data_config(tmp_path / "d", caption_strategy="filename"))) == \
        {"red_circle-on white (2).png": "red circle on white"}
    cfg = data_config(tmp_path / "d", caption_strategy="instanceprompt", instance_prompt="a photo of sks dog")
    assert set(captions(build_image_dataset(cfg)).values()) == {"a photo of sks dog"}
    assert caption_from_filename(tmp_path / "00_blue.square.jpg") == "00 blue square"
    with pytest.raises(ConfigError, match="data.instance_prompt"):
        data_config(tmp_path / "d", caption_strategy="instanceprompt")


def test_parquet_caption_column_with_fallback(tmp_path):
    folder = tmp_path / "d"
    for name in ("a.png", "b.png", "c.png", "d.png"):
        add_image(folder, name, caption=None)
    pd.DataFrame({"file_name": ["a.png", "b.png", "c.png"], "text": ["first", "", None],
                  "tags": ["x", "second from tags", ""]}).to_parquet(folder / "captions.parquet")
    cfg = data_config(folder, caption_strategy="parquet", caption_column="text", fallback_caption_column="tags")
    report = scan_image_job(cfg)
    assert captions(report) == {"a.png": "first", "b.png": "second from tags"}
    bad = {f.path.name: f.reason for f in report.bad}
    assert "empty caption" in bad["c.png"] and "'text' and 'tags'" in bad["c.png"]
    assert "no row for 'd.png'" in bad["d.png"]
    with pytest.raises(DataError, match="data.caption_column: column 'nope'"):
        scan_image_job(data_config(folder, caption_strategy="parquet", caption_column="nope"))


def test_jsonl_metadata(tmp_path):
    folder = tmp_path / "d"
    add_image(folder / "sub", "a.png", caption=None)
    add_image(folder, "b.png", caption=None)
    rows = [{"file_name": "sub/a.png", "caption": "in a subfolder"}, {"file_name": "b.png", "caption": "top"}]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert captions(build_image_dataset(data_config(folder, caption_strategy="jsonl"))) == \
        {"a.png": "in a subfolder", "b.png": "top"}


def test_shuffle_keeps_the_leading_tokens_and_dropout_empties(tmp_path):
    data = data_config(tmp_path, shuffle_captions=True, keep_tokens=1).data
    caption = "sks, red, round, shiny, small"
    variants = {vary_caption(caption, np.random.default_rng(i), data) for i in range(30)}
    assert len(variants) > 5
    assert all(v.startswith("sks, ") and sorted(v.split(", ")) == sorted(caption.split(", ")) for v in variants)
    data = data_config(tmp_path, caption_dropout=0.5).data
    dropped = [vary_caption(caption, np.random.default_rng(i), data) == "" for i in range(200)]
    assert 60 < sum(dropped) < 140
    assert vary_caption(caption, np.random.default_rng(0), data_config(tmp_path).data) == caption


def test_training_captions_vary_per_epoch_and_repeat_for_the_same_epoch(good_folder):
    cfg = data_config(good_folder, caption_strategy="instanceprompt", instance_prompt="a, b, c, d, e, f",
                      shuffle_captions=True)
    dataset = build_image_dataset(cfg)
    assert len({dataset[(0, epoch)]["caption"] for epoch in range(10)}) > 1
    assert dataset[(0, 3)]["caption"] == dataset[(0, 3)]["caption"]  # same (view, epoch): same caption
