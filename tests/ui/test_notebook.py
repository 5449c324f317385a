"""The Colab notebook: installs, sets a password, queues the tiny preset, launches with a share link;
every command it runs is one the studio's own parsers accept."""
from __future__ import annotations

import json
import shlex

from conftest import REPO
from studio.cli import build_parser
from studio.queue.cli import build_parser as queue_parser
from studio.ui.app import parse_args, serving_options


def notebook_commands() -> list[list[str]]:
    nb = json.loads((REPO / "notebooks" / "studio_colab.ipynb").read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    lines = [line.strip() for cell in nb["cells"] if cell["cell_type"] == "code" for line in cell["source"]]
    return [shlex.split(line[1:]) for line in lines if line.startswith("!")]


def test_notebook_installs_queues_the_tiny_preset_and_shares_with_a_password():
    commands = notebook_commands()
    # the lock minus torch (Colab's torch matches its driver), installed exactly
    assert ["grep", "-v", "^torch==", "requirements.txt", ">", "/tmp/studio-lock.txt"] in commands
    assert any(c[:2] == ["pip", "install"] and "/tmp/studio-lock.txt" in c for c in commands)
    studio = [c[3:] for c in commands if c[:3] == ["python", "-m", "studio"]]
    for argv in studio:
        args = build_parser().parse_args(argv)
        if args.command == "queue":
            queue_parser().parse_args(args.queue_args)
    queued = [a for a in studio if a[:2] == ["queue", "add"]]
    assert queued and (REPO / queued[0][2]).is_file() and "tiny" in queued[0][2]
    launch = [c[2:] for c in commands if c[:2] == ["python", "app.py"]]
    assert launch == [["--share"]]
    serving = serving_options(parse_args(launch[0]), env={"STUDIO_AUTH": "studio:x"})  # set by the notebook
    assert serving["share"] and serving["auth"]
    source = (REPO / "notebooks" / "studio_colab.ipynb").read_text(encoding="utf-8")
    assert 'os.environ[\\"STUDIO_AUTH\\"]' in source
