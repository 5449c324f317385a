"""Settings that act on a run and leave files in its folder: step profiling, per-layer gradient norms,
the step-0 baseline sample, batch prefetching, the job's environment file and a PEFT config file (FIELDS
G03, G06, S04, W05/W06, V03, H04, A16)."""
from __future__ import annotations

import json
import threading

import pytest

from studio.config import ConfigError, load_config
from studio.data.prefetch import prefetched
from studio.train.job_env import job_environment
from tests.conftest import REPO, read_progress, run_studio

PRESET = str(REPO / "presets/tiny-sd15-lora.json")


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_profiling_grad_norms_baseline_prefetch_and_env_file(tmp_path):
    env_file = tmp_path / "job.env"
    env_file.write_text("# for this job only\nexport STUDIO_JOB_MARK='yes'\n")
    from peft import LoraConfig

    LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k"]).save_pretrained(str(tmp_path / "peft"))
    run_dir = tmp_path / "run"
    result = run_studio("train", PRESET, "--set", f"job.output_dir={run_dir}", "--set", "training.max_steps=4",
                        "--set", "logging.step_profiling=true", "--set", "logging.log_heavy_every=2",
                        "--set", "logging.track_microbatches=true", "--set", "training.gradient_accumulation_steps=2",
                        "--set", "sampling.baseline_sample=true", "--set", "sampling.every_steps=0",
                        "--set", "sampling.at_end=false", "--set", "dataloader.prefetch_batches=true",
                        "--set", "dataloader.prefetch_queue=2", "--set", f"job.env_file={env_file}",
                        "--set", f"adapter.peft_config_path={tmp_path / 'peft'}", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    profile = _lines(run_dir / "profile.jsonl")
    assert [p["step"] for p in profile] == [1, 2, 3, 4]
    phases = ("data_s", "forward_s", "backward_s", "optimizer_s", "other_s")
    assert all(p["forward_s"] > 0 and p["backward_s"] > 0 for p in profile)
    assert all(abs(sum(p[k] for k in phases) - p["total_s"]) < 1e-4 for p in profile)
    micro = [p["microbatches"] for p in profile]
    assert all(len(m) == 2 and all(b["forward_s"] > 0 and b["backward_s"] > 0 for b in m) for m in micro)
    norms = _lines(run_dir / "grad_norms.jsonl")
    assert [n["step"] for n in norms] == [2, 4]
    layers = norms[0]["norms"]
    assert layers and all(v > 0 for v in layers.values()) and not any("lora_" in k for k in layers)
    samples = [r for r in read_progress(run_dir) if r.get("event") == "sample"]
    assert [s["step"] for s in samples] == [0]  # the baseline only: no periodic or final samples asked
    assert (run_dir / "samples" / "step-000000_p0.png").is_file()
    args = json.loads((run_dir / "training_args.json").read_text())
    assert args["environment"] == ["STUDIO_JOB_MARK"]  # names only, never values
    adapter = json.loads((run_dir / "adapter_config.json").read_text())  # the PEFT file's adapter was trained
    assert adapter["r"] == 2 and sorted(adapter["target_modules"]) == ["to_k", "to_q"]
    assert args["config"]["adapter"]["rank"] == 2


def test_env_file_variables_reach_the_job_and_the_hub_client(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    from studio.train.job_env import apply_job_environment

    env_file = tmp_path / "job.env"
    env_file.write_text("HF_ENDPOINT=http://127.0.0.1:9\nSTUDIO_JOB_MARK=on\n")
    for name in ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE"):  # put the client back after the test
        monkeypatch.setattr(constants, name, getattr(constants, name))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("STUDIO_JOB_MARK", raising=False)
    names = apply_job_environment(load_config(PRESET, [f"job.env_file={env_file}"]))
    assert names == ["HF_ENDPOINT", "STUDIO_JOB_MARK"]
    assert huggingface_hub.hf_hub_url("someone/model", "config.json").startswith("http://127.0.0.1:9/someone/model/")
    monkeypatch.setenv("HF_ENDPOINT", "x")  # monkeypatch restores (removes) both variables afterwards
    monkeypatch.setenv("STUDIO_JOB_MARK", "x")


def test_env_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.env"
    bad.write_text("GOOD=1\nthis is not a variable\n")
    cfg = load_config(PRESET, [f"job.env_file={bad}"])
    with pytest.raises(ConfigError, match="line 2"):
        job_environment(cfg)
    cfg = load_config(PRESET, [f"job.env_file={tmp_path / 'missing.env'}"])
    with pytest.raises(ConfigError, match="job.env_file"):
        job_environment(cfg)


def test_hub_endpoint_becomes_hf_endpoint_and_wins_over_the_file(tmp_path):
    env_file = tmp_path / "job.env"
    env_file.write_text('HF_ENDPOINT="https://a.example"\nOTHER=1\n')
    cfg = load_config(PRESET, [f"job.env_file={env_file}", "hub.endpoint=https://hf-mirror.com/"])
    assert job_environment(cfg) == {"HF_ENDPOINT": "https://hf-mirror.com", "OTHER": "1"}
    with pytest.raises(ConfigError, match="hub.endpoint"):
        load_config(PRESET, ["hub.endpoint=hf-mirror.com"])


def test_prefetch_keeps_order_raises_errors_and_stops_its_thread():
    assert list(prefetched(range(50), 3)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad batch 2")

    with pytest.raises(ValueError, match="bad batch 2"):
        list(prefetched(broken(), 2))
    before = threading.active_count()
    stream = prefetched(iter(range(10_000)), 2)
    assert next(stream) == 0
    stream.close()  # the loop stopped early (max steps, STOP)
    assert threading.active_count() == before
