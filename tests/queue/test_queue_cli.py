"""`python -m studio queue ...`: exit codes, messages, list --json and the generated script."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from studio.queue import commands
from studio.queue.cli import main, summary_table

PRESET = commands.PROJECT_ROOT / "presets" / "tiny-sd15-lora.json"


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "job.json"
    (tmp_path / "data").mkdir()  # beside STUDIO_HOME: a run folder inside the dataset is refused
    path.write_text(json.dumps({"model": {"path": "tiny:sd15"}, "data": {"path": str(tmp_path / "data")}}))
    return path


def _list_json(capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["list", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_add_list_stop_remove(home, config_file, capsys):
    assert main(["add", str(config_file), "--set", "training.max_steps=3", "--name", "first"]) == 0
    assert main(["add", str(config_file), "--kind", "preprocess"]) == 0
    assert "queued job 2" in capsys.readouterr().out
    jobs = _list_json(capsys)
    assert [(j["name"], j["kind"], j["status"]) for j in jobs][0] == ("first", "train", "pending")
    assert re.fullmatch(r"sd15_\d{8}_\d{6}", jobs[1]["name"]) and jobs[1]["kind"] == "preprocess"
    assert jobs[0]["config"]["training"]["max_steps"] == 3
    assert main(["stop", "1"]) == 0 and "stopped" in capsys.readouterr().out
    assert main(["remove", "1"]) == 0
    assert [j["id"] for j in _list_json(capsys)] == [2]
    assert main(["list"]) == 0 and "preprocess" in capsys.readouterr().out


def test_config_errors_exit_2_and_name_the_field(home, config_file, tmp_path, capsys):
    assert main(["add", str(config_file), "--set", "training.learning_rat=1"]) == 2
    assert "training.learning_rat" in capsys.readouterr().err
    assert main(["add", str(tmp_path / "missing.json")]) == 2
    assert main(["add", str(config_file), "--name", "no/slashes"]) == 2
    assert "job.name" in capsys.readouterr().err
    assert main(["settings", "stop_grace_s=soon"]) == 2
    assert main(["list", "--json"]) == 0 and json.loads(capsys.readouterr().out) == []


def test_refusals_exit_1_with_a_clear_message(home, config_file, capsys):
    from studio.queue import JobStore

    assert main(["add", str(config_file), "--name", "busy"]) == 0
    JobStore().claim_next("nonce")
    assert main(["remove", "1"]) == 1
    err = capsys.readouterr().err
    assert "running and cannot be removed" in err and "queue stop 1" in err
    assert main(["resume", "1"]) == 1 and "cannot resume" in capsys.readouterr().err
    assert main(["stop", "99"]) == 1 and "no job with id 99" in capsys.readouterr().err
    assert main(["run", "--until-empty", "--gpus", "0,0"]) == 1  # a bad pool is named before anything runs
    assert "queue.gpus" in capsys.readouterr().err and JobStore().get(1).status == "running"
    assert main(["settings", "gpus=0,1"]) == 0 and 'queue.gpus = "0,1"' in capsys.readouterr().out
    assert main(["settings", "cpu_jobs=0"]) == 2 and "queue.cpu_jobs" in capsys.readouterr().err


def test_move_and_settings(home, config_file, capsys):
    for name in ("a", "b", "c"):
        main(["add", str(config_file), "--name", name])
    assert main(["move", "3", "0"]) == 0
    assert [j["name"] for j in _list_json(capsys)] == ["c", "a", "b"]
    assert main(["settings", "auto_resume_interrupted=false", "stop_grace_s=30"]) == 0
    out = capsys.readouterr().out
    assert "queue.auto_resume_interrupted = false" in out and "queue.stop_grace_s = 30" in out


def test_script_has_the_exact_commands_of_pending_jobs(home, config_file, tmp_path, capsys):
    main(["add", str(config_file), "--name", "one"])
    main(["add", str(config_file), "--name", "two", "--kind", "preprocess", "--set", "distributed.num_processes=2"])
    main(["add", str(config_file), "--name", "gone"])
    main(["stop", "3"])
    out = tmp_path / "queue.sh"
    assert main(["script", "--out", str(out)]) == 0
    text = out.read_text()
    subprocess.run(["bash", "-n", str(out)], check=True)  # valid bash
    run_one = home / "runs" / "one"
    assert f"{sys.executable} -m studio train {run_one}/config.json >> {run_one}/console.log" in text
    # several processes start the same way: `studio train` itself runs accelerate's launcher
    run_two = home / "runs" / "two"
    assert f"{sys.executable} -m studio preprocess {run_two}/config.json >> {run_two}/console.log" in text
    assert "gone" not in text and text.index("'one'") < text.index("'two'")
    # The embedded config is the one the worker would write.
    block = text.split("<<'STUDIO_CONFIG_EOF'\n", 1)[1].split("\nSTUDIO_CONFIG_EOF", 1)[0]
    from studio.queue import JobStore

    assert json.loads(block) == JobStore().get(1).config


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_runs_the_jobs(home, config_file, tmp_path, monkeypatch, capsys):
    """The script really runs: with `python` swapped for a recorder that prints its arguments."""
    main(["add", str(config_file), "--name", "one"])
    main(["settings", "use_uv=true"])  # commands become `uv run python ...`: put a fake `uv` first in PATH
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text("#!/bin/sh\necho \"uv $*\"\n")
    (bin_dir / "uv").chmod(0o755)
    out = tmp_path / "queue.sh"
    main(["script", "--out", str(out)])
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(["bash", str(out)], check=True, env=env)
    run_dir = home / "runs" / "one"
    assert "uv run python -m studio train" in (run_dir / "console.log").read_text()
    assert json.loads((run_dir / "config.json").read_text())["job"]["name"] == "one"


def test_summary_table_columns(home, config_file):
    from studio.queue import JobStore

    store = JobStore()
    main(["add", str(config_file), "--name", "sum"])
    store.claim_next("n")
    store.finish(1, "n", "completed", exit_code=0, final_loss=0.123456)
    table = summary_table([store.get(1)])
    header, row = table.splitlines()
    assert header.split() == ["job", "status", "duration", "final", "loss", "output", "folder"]
    assert "1 sum" in row and "completed" in row and "0.1235" in row and str(home / "runs" / "sum") in row


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_with_a_gpu_pool_runs_waves_on_disjoint_gpus(home, config_file, tmp_path, capsys):
    """With a pool the script follows the worker's rule: two 1-GPU jobs side by side, the 2-GPU job (queued
    between them) first when both GPUs are free, each job with its GPUs and a port of its own; a job that
    can never fit is left out with the reason. Run with `python` swapped for a recorder."""
    main(["add", str(config_file), "--name", "big", "--set", "distributed.num_processes=2"])
    main(["add", str(config_file), "--name", "a"])
    main(["add", str(config_file), "--name", "b"])
    main(["add", str(config_file), "--name", "huge", "--set", "distributed.num_processes=3"])
    main(["add", str(config_file), "--name", "cpu", "--set", "model.device=cpu"])
    main(["settings", "use_uv=true"])
    out = tmp_path / "queue.sh"
    assert main(["script", "--gpus", "0,1", "--out", str(out)]) == 0
    text = out.read_text()
    subprocess.run(["bash", "-n", str(out)], check=True)
    waves = [w.split("\nwait\n")[0] for w in text.split("# ---- wave ")[1:]]
    names = [re.findall(r"# job \d+ '(\w+)'", w) for w in waves]
    assert names == [["big", "cpu"], ["a", "b"]], names  # first fit in queue order; the CPU job needs no GPU
    assert "job 4 'huge' left out: it asks for 3 GPUs" in text
    assert main(["script", "--gpus", "0,0"]) == 1 and "queue.gpus" in capsys.readouterr().err

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()  # the recorder: which GPUs the job sees and which it was given in its config
    (bin_dir / "uv").write_text("#!/bin/sh\necho \"gpus=${CUDA_VISIBLE_DEVICES:-none} $*\"\n")
    (bin_dir / "uv").chmod(0o755)
    subprocess.run(["bash", str(out)], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)})
    seen = {name: (home / "runs" / name / "console.log").read_text().split()[0] for name in ("big", "a", "b", "cpu")}
    assert seen == {"big": "gpus=0,1", "a": "gpus=0", "b": "gpus=1", "cpu": "gpus=none"}, seen
    launched = json.loads((home / "runs" / "big" / "config.json").read_text())["distributed"]
    assert launched["gpu_ids"] == "0,1" and launched["main_process_port"] == 29500
    assert not (home / "runs" / "huge" / "console.log").exists()
