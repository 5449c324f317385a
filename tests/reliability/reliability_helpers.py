"""Reliability suite helpers: the CLI run in this process, a workspace with a valid job, and a
snapshot of everything a refused command must leave alone (run folders, queue rows)."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(capsys, *argv: str) -> Result:
    """`python -m studio ARGV` in this process; argparse's own exit (usage errors) becomes the code."""
    from studio.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: unknown command, missing argument, bad choice
        rc = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Result(rc, captured.out, captured.err)


def write_images(folder: Path, n: int = 2, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size), (40 * i, 90, 200)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"a blue square number {i}", encoding="utf-8")
    return folder


@dataclass
class Workspace:
    root: Path
    home: Path
    data: Path
    config: Path
    run_dir: Path

    def write_config(self, name: str, payload) -> Path:
        path = self.root / name
        path.write_text(payload if isinstance(payload, str) else json.dumps(payload), encoding="utf-8")
        return path

    def snapshot(self) -> dict:
        """Every file under the studio home and the run folder (path -> size, mtime) and the queue rows."""
        files = {}
        for base in (self.home, self.run_dir):
            if base.exists():
                for path in sorted(base.rglob("*")):
                    if path.name.startswith("queue.db"):
                        continue  # compared by its rows below (opening it may touch the WAL files)
                    stat = path.stat()
                    files[str(path)] = (stat.st_size, stat.st_mtime_ns) if path.is_file() else "dir"
        rows = []
        db = self.home / "queue.db"
        if db.exists() and db.stat().st_size:
            conn = sqlite3.connect(db)
            try:
                rows = conn.execute("SELECT id, name, status, config FROM jobs ORDER BY id").fetchall()
            finally:
                conn.close()
        return {"files": files, "rows": rows}


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("STUDIO_HOME", str(home))
    data = write_images(tmp_path / "data")
    run_dir = tmp_path / "run"
    config = tmp_path / "job.json"
    config.write_text(json.dumps({
        "model": {"family": "sd15", "path": "tiny:sd15"},
        "data": {"path": str(data), "resolution": 64},
        "training": {"max_steps": 2, "batch_size": 1},
        "job": {"output_dir": str(run_dir)},
    }), encoding="utf-8")
    return Workspace(tmp_path, home, data, config, run_dir)


def write_bomb_png(path: Path, side: int) -> Path:
    """A valid greyscale PNG of side x side black pixels that is only a few hundred KB on disk
    (a decompression bomb), written chunk by chunk without ever holding the pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (side + 1)  # filter byte + one byte a pixel
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path
