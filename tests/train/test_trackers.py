"""`logging.report_to` (FIELDS G05): accelerate's trackers, each checked through what it wrote, read back
with the tracker's own format (TensorBoard events, the W&B offline run file, Comet's offline archive,
MLflow's client). Offline throughout: W&B and Comet in their offline modes, MLflow on a folder."""
from __future__ import annotations

import json
import struct
import sys
import zipfile
from pathlib import Path

import pytest

from studio.config import ConfigError, load_config
from tests.conftest import REPO, read_progress, run_studio

PRESET = str(REPO / "presets/tiny-sd15-lora.json")
SHORT = ["--set", "training.max_steps=4", "--set", "logging.logging_steps=1", "--set", "sampling.prompts=[]",
         "--set", "sampling.at_end=false", "--set", "checkpointing.save_strategy=no"]


def _cfg(logging: dict):
    return load_config({"model": {"family": "sd15", "path": "tiny:sd15"}, "data": {"path": str(REPO)},
                        "logging": logging})


def _offline_env(tmp: Path) -> dict:
    """Nothing from this user's tracker settings, nothing uploaded."""
    return {"WANDB_CONFIG_DIR": str(tmp / "wandb-config"), "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
            "WANDB_DATA_DIR": str(tmp / "wandb-data"), "WANDB_DIR": str(tmp / "wandb-dir"),
            "COMET_CONFIG": str(tmp / "comet.config"), "MLFLOW_TRACKING_URI": ""}


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_progress(run_dir) if "loss" in r and "event" not in r}


# ---- the setting -------------------------------------------------------------------------------
def test_tensorboard_is_the_default_and_the_old_switch_still_works():
    assert _cfg({}).logging.report_to == ["tensorboard"]
    assert _cfg({"tensorboard": False}).logging.report_to == []
    assert _cfg({"tensorboard": False, "report_to": ["tensorboard", "wandb"]}).logging.report_to == ["wandb"]
    assert _cfg({"tensorboard": True, "report_to": ["wandb"]}).logging.report_to == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="logging.tensorboard"):
        _cfg({"tensorboard": "yes"})
    with pytest.raises(ConfigError, match="names a tracker twice"):
        _cfg({"report_to": ["wandb", "wandb"]})
    with pytest.raises(ConfigError, match="'neptune'"):
        _cfg({"report_to": ["neptune"]})


def test_a_tracker_that_is_not_installed_is_named_with_its_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "comet_ml", None)  # how Python marks a module as absent
    with pytest.raises(ConfigError) as err:
        _cfg({"report_to": ["tensorboard", "comet_ml"]})
    assert "logging.report_to" in str(err.value) and "pip install comet-ml" in str(err.value)


# ---- a tiny run with TensorBoard, W&B and Comet at once ----------------------------------------
def _tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _wandb_history(run_file: Path) -> list[dict]:
    """The history records of a W&B offline run file: a LevelDB-style log (7-byte file header, 32 KiB
    blocks of chunks with a 7-byte header each) of `wandb_internal_pb2.Record` messages."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", run_file
    pos, pending, rows = 7, b"", []
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # block trailer: padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.mark.slow
def test_tiny_run_reports_to_tensorboard_wandb_and_comet_offline(tmp_path):
    run_dir = tmp_path / "run"
    result = run_studio("train", PRESET, "--set", f"job.output_dir={run_dir}", "--set", "job.run_name=ink",
                        *SHORT, "--set", 'logging.report_to=["tensorboard","wandb","comet_ml"]',
                        "--set", "logging.trackers_offline=true", "--set", "logging.tracker_project=studio-test",
                        env=_offline_env(tmp_path), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = _losses(run_dir)
    assert sorted(losses) == [1, 2, 3, 4]

    # TensorBoard: where it always was (runs/<run_name>), the same tags and values as the progress file.
    scalars = _tensorboard_scalars(run_dir / "runs" / "ink")
    assert {"train/loss", "train/lr", "train/grad_norm"} <= set(scalars)
    assert scalars["train/loss"] == pytest.approx(losses)

    # W&B: an offline run in RUN_DIR/wandb whose history holds the loss at each logging step.
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history = [row for row in _wandb_history(run_file) if "train/loss" in row]
    assert {row["_step"]: row["train/loss"] for row in history} == pytest.approx(losses)
    assert not list((tmp_path / "wandb-dir").glob("**/*.wandb"))  # into the run folder, not elsewhere

    # Comet: one offline archive in RUN_DIR/comet with the loss metric and the project name.
    (archive,) = (run_dir / "comet").glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        messages = [json.loads(line) for line in zf.read("messages.json").decode().splitlines() if line.strip()]
        experiment = json.loads(zf.read("experiment.json"))
    logged = {}
    for message in messages:
        metric = (message.get("payload") or {}).get("metric") or {}
        if metric.get("metricName") == "train/loss":
            logged[int(metric["step"])] = float(metric["metricValue"])
    assert logged == pytest.approx(losses)
    assert experiment.get("project_name") == "studio-test"


def test_mlflow_records_the_loss_in_a_folder_store(tmp_path, monkeypatch):
    import mlflow  # in requirements-dev.txt (users install it themselves: pip install mlflow-skinny)

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the client below, as the trainer sets it
    run_dir = tmp_path / "run"
    result = run_studio("train", PRESET, "--set", f"job.output_dir={run_dir}", *SHORT,
                        "--set", 'logging.report_to=["mlflow"]', env=_offline_env(tmp_path), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = _losses(run_dir)
    client = mlflow.MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "training-studio"]
    (run,) = client.search_runs([experiment.experiment_id])
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert history == pytest.approx(losses)
    assert run.data.params["training.max_steps"] == "4"
    assert not (run_dir / "runs").exists()  # TensorBoard was not chosen


def test_no_tracker_writes_nothing_but_the_progress_file(tmp_path):
    run_dir = tmp_path / "run"
    result = run_studio("train", PRESET, "--set", f"job.output_dir={run_dir}", *SHORT,
                        "--set", "logging.tensorboard=false", env=_offline_env(tmp_path), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(_losses(run_dir)) == [1, 2, 3, 4]
    assert not any((run_dir / name).exists() for name in ("runs", "wandb", "comet", "mlruns"))


@pytest.mark.slow
def test_two_processes_report_once(tmp_path):
    """Only the main process gets trackers: one TensorBoard event file and one W&B run, each step once."""
    import socket

    with socket.socket() as sock:  # a free port for the ranks' rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run_dir = tmp_path / "run"
    result = run_studio("train", PRESET, "--set", f"job.output_dir={run_dir}", *SHORT, "--set", "model.device=cpu",
                        "--set", "training.max_steps=2", "--set", "training.batch_size=1",
                        "--set", "distributed.num_processes=2", "--set", f"distributed.main_process_port={port}",
                        "--set", 'logging.report_to=["tensorboard","wandb"]', "--set", "logging.trackers_offline=true",
                        env=_offline_env(tmp_path), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(list((run_dir / "runs").glob("events.out.tfevents.*"))) == 1
    assert sorted(_tensorboard_scalars(run_dir / "runs")["train/loss"]) == [1, 2]
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    assert [row["_step"] for row in _wandb_history(run_file) if "train/loss" in row] == [1, 2]


def test_wandb_online_without_a_key_fails_before_the_model_loads(tmp_path):
    """A tracker that cannot start ends the job before any model is loaded, naming the field and the way
    out (the key, or offline mode)."""
    run_dir = tmp_path / "run"
    env = {**_offline_env(tmp_path), "HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_MODE": ""}
    result = run_studio("train", PRESET, "--set", f"job.output_dir={run_dir}", *SHORT,
                        "--set", 'logging.report_to=["wandb"]', env=env, timeout=600)
    assert result.returncode != 0
    records = read_progress(run_dir)
    failed = [r for r in records if r.get("event") == "error"]
    assert failed and "logging.report_to" in failed[-1]["message"], records[-3:]
    assert "WANDB_API_KEY" in failed[-1]["message"] and "logging.trackers_offline" in failed[-1]["message"]
    assert not [r for r in records if r.get("event") == "loading"]  # no model was loaded first


def test_each_step_has_its_own_loss_between_logging_steps(tmp_path):
    """logging_steps=2 with 2 batches per step: each record carries the loss of both its steps (each
    the mean of its batches), the record's loss is their mean, and TensorBoard has every step."""
    run_dir = tmp_path / "run"
    result = run_studio("train", PRESET, "--set", f"job.output_dir={run_dir}", *SHORT,
                        "--set", "logging.logging_steps=2", "--set", "training.gradient_accumulation_steps=2",
                        "--set", "training.batch_size=1", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [r for r in read_progress(run_dir) if "loss" in r and "event" not in r]
    assert [r["step"] for r in records] == [2, 4]
    each = {}
    for rec in records:
        assert len(rec["step_losses"]) == 2
        assert rec["loss"] == pytest.approx(sum(rec["step_losses"]) / 2, rel=1e-5)
        each.update({rec["step"] - 1: rec["step_losses"][0], rec["step"]: rec["step_losses"][1]})
    assert len(set(each.values())) == 4  # four different steps, not one value repeated
    scalars = _tensorboard_scalars(run_dir / "runs")
    assert scalars["train/step_loss"] == pytest.approx(each, rel=1e-5)
    assert scalars["train/loss"] == pytest.approx({r["step"]: r["loss"] for r in records}, rel=1e-5)
