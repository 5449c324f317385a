"""The generic cache manifest: per-part freshness, atomic incremental updates, garbage collection."""
from __future__ import annotations

import json

import torch

from studio.data.manifest import CacheManifest, Want, read_tensors


def entry_bytes(root) -> dict[str, str]:
    entries = json.loads((root / "manifest.json").read_text())["entries"]
    return {k: json.dumps(v, sort_keys=True) for k, v in entries.items()}


def test_parts_go_stale_when_input_or_settings_change_and_others_stay_identical(tmp_path):
    m = CacheManifest(tmp_path, "demo")
    assert not m.exists
    wants = {f"item{i}": {"tokens": Want(f"sha{i}", {"max_len": 8})} for i in range(3)}
    for key, parts in wants.items():
        m.put(key, key, "tokens", parts["tokens"], {"ids": torch.arange(4)})
    m.save()
    before = entry_bytes(tmp_path)
    m = CacheManifest(tmp_path, "demo")
    assert m.exists and m.report(wants).as_dict() == {"fresh": 3, "stale": 0, "missing": 0, "removed": 0}
    wants["item1"] = {"tokens": Want("sha1-edited", {"max_len": 8})}
    wants["item2"] = {"tokens": Want("sha2", {"max_len": 16})}
    wants["item3"] = {"tokens": Want("sha3", {"max_len": 8})}
    del wants["item0"]
    report = m.report(wants)
    assert report.as_dict() == {"fresh": 0, "stale": 2, "missing": 1, "removed": 1}
    reasons = dict(report.reasons)
    assert "input changed" in reasons["item1"] and "max_len" in reasons["item2"] and "not cached" in reasons["item3"]
    m.put("item1", "item1", "tokens", wants["item1"]["tokens"], {"ids": torch.arange(5)})
    m.keep_only(set(wants))
    m.save()
    assert m.collect_garbage(("tokens",)) == 2  # item0's file and item1's old file
    after = entry_bytes(tmp_path)
    assert "item0" not in after and after["item2"] == before["item2"] and after["item1"] != before["item1"]
    assert read_tensors(m.tensor_file("item1", "tokens"))["ids"].tolist() == [0, 1, 2, 3, 4]


def test_compressed_files_read_back_and_a_deleted_file_counts_as_missing(tmp_path):
    m = CacheManifest(tmp_path, "demo")
    want = Want("x", {})
    m.put("a", "a", "latents", want, {"t": torch.zeros(4, 64, 64), "u": torch.ones(3)}, compress=True)
    m.save()
    path = m.tensor_file("a", "latents")
    assert path.name.endswith(".safetensors.gz") and path.stat().st_size < 4 * 64 * 64 * 4 / 10
    assert read_tensors(path, ["u"])["u"].tolist() == [1.0, 1.0, 1.0]
    path.unlink()
    assert m.report({"a": {"latents": want}}).missing == 1


def test_a_manifest_of_another_kind_or_version_is_ignored(tmp_path):
    m = CacheManifest(tmp_path, "image")
    m.put("a", "a", "latents", Want("x", {}), {"t": torch.zeros(1)})
    m.save()
    assert CacheManifest(tmp_path, "audio").entries == {}
    assert not list(tmp_path.glob(".manifest.json.*"))  # no temp files left behind
