"""Issue #18 items 10 and 12 on the dataset scan: a decompression bomb is named with the limit and
never decoded; a caption that is not UTF-8 is read with the stated fallback and named in a warning."""
from __future__ import annotations

import resource

from reliability_helpers import write_bomb_png, write_images
from studio.config.loader import load_config
from studio.data.captions import CAPTION_FALLBACK
from studio.data.preflight import scan_job_images
from studio.data.scan import MAX_DECODE_PIXELS


def _scan(folder):
    return scan_job_images(load_config({"model": {"path": "tiny:sd15"}, "data": {"path": str(folder)}}))


def test_a_decompression_bomb_is_named_and_not_decoded(tmp_path):
    folder = write_images(tmp_path / "data", 1)
    side = 13000  # 169 million pixels in a file of a few hundred KB, as in the issue
    write_bomb_png(folder / "bomb.png", side)
    (folder / "bomb.txt").write_text("a bomb")
    assert (folder / "bomb.png").stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = _scan(folder)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    bad = {f.path.name: f.reason for f in report.bad}
    assert "bomb.png" in bad and "13000x13000" in bad["bomb.png"]
    assert f"limit {MAX_DECODE_PIXELS / 1e6:.0f} million" in bad["bomb.png"]
    assert [i.path.name for i in report.items] == ["img0.png"]
    assert grown_mb < 150, f"the scan grew the process by {grown_mb:.0f} MB"  # decoding would cost ~170 MB+


def test_a_caption_that_is_not_utf8_is_named_and_read_with_the_fallback(tmp_path):
    folder = write_images(tmp_path / "data", 2)
    (folder / "img1.txt").write_bytes("a café in Zürich".encode(CAPTION_FALLBACK))
    report = _scan(folder)
    captions = {i.path.name: i.caption for i in report.items}
    assert captions["img1.png"] == "a café in Zürich"
    warned = {f.path.name: f.reason for f in report.warnings}
    assert "img1.png" in warned and "img1.txt is not UTF-8" in warned["img1.png"] and CAPTION_FALLBACK in warned["img1.png"]
    assert "img0.png" not in warned
