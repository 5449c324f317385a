import json

from studio.train import checkpoint as ckpt


def _fake_committed(run_dir, step):
    path = run_dir / f"checkpoint-{step}"
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"step": step}))
    return path


def test_incomplete_saves_are_ignored_and_cleaned(tmp_path):
    _fake_committed(tmp_path, 4)
    _fake_committed(tmp_path, 8)
    (tmp_path / "checkpoint-12").mkdir()  # killed before its manifest
    (tmp_path / ".tmp-checkpoint-16").mkdir()  # killed mid-write
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-8"
    removed = {p.name for p in ckpt.clean_incomplete(tmp_path)}
    assert removed == {"checkpoint-12", ".tmp-checkpoint-16"}
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-8"]


def test_pruning_keeps_the_newest_and_the_protected_one(tmp_path):
    paths = [_fake_committed(tmp_path, s) for s in (2, 4, 6, 8)]
    ckpt.prune_checkpoints(tmp_path, keep=2, protect=paths[0])
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-6", "checkpoint-8"]


def test_numeric_not_lexical_order(tmp_path):
    for step in (9, 10, 100):
        _fake_committed(tmp_path, step)
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-100"
