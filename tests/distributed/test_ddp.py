"""Two processes on the CPU (gloo), started the way users start them: `python -m studio train` with
distributed.num_processes=2, which runs accelerate's launcher. 2 ranks x batch 1 must train exactly
like 1 rank x batch 2; the run folder is written once; a killed rank ends the job, which resumes."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import socket
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from tests.conftest import REPO, read_progress, run_studio, studio_cmd

pytestmark = pytest.mark.slow


def _free_port() -> int:
    """A port nobody listens on now, for the ranks' rendezvous (the master binds it on loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


COMMON = ["--no-progress", "--set", "model.device=cpu", "--set", "sampling.every_steps=0",
          "--set", "sampling.at_end=false", "--set", "logging.logging_steps=1"]


def _train(preset: str, run_dir: Path, *overrides: str, processes: int = 1, batch: int = 2, steps: int = 3):
    sets = [*COMMON, "--set", f"training.max_steps={steps}", "--set", f"training.batch_size={batch}",
            "--set", f"distributed.num_processes={processes}", "--set", f"distributed.main_process_port={_free_port()}",
            "--set", f"job.output_dir={run_dir}", "--set", f"job.name={run_dir.name}"]
    for o in overrides:
        sets += ["--set", o]
    out = run_studio("train", f"presets/{preset}.json", *sets, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return read_progress(run_dir)


def _relative_difference(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    num = sum(float(((wa[k] - wb[k]) ** 2).sum()) for k in wa) ** 0.5
    return num / sum(float((wa[k] ** 2).sum()) for k in wa) ** 0.5


def test_image_two_ranks_of_one_equal_one_rank_of_two_and_write_the_run_folder_once(tmp_path):
    one = tmp_path / "one"
    _train("tiny-sd15-lora", one, "checkpointing.save_steps=2")
    two = tmp_path / "two"
    progress = _train("tiny-sd15-lora", two, "checkpointing.save_steps=2", processes=2, batch=1)
    assert _relative_difference(one, two) <= 1e-5
    assert [r["loss"] for r in read_progress(one) if "loss" in r] == [r["loss"] for r in progress if "loss" in r]
    # written once: one record per logged step, one checkpoint per save (step 2, and the final step
    # kept resumable), one set of exports, one start and done
    assert [r["step"] for r in progress if "loss" in r] == [1, 2, 3]
    events = [r["event"] for r in progress if "event" in r]
    assert events.count("start") == 1 and events.count("done") == 1 and events.count("checkpoint") == 2
    start = next(r for r in progress if r.get("event") == "start")
    assert start["processes"] == 2 and start["ddp"] == {"gradient_as_bucket_view": True, "static_graph": False}
    assert sorted(p.name for p in two.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert len(list(two.glob("*_kohya.safetensors"))) == 1
    assert (two / "accelerate_config.json").is_file()


def test_causal_lm_two_ranks_equal_one_rank_and_eval_is_reduced(tmp_path):
    words = "the cat sat on a mat while birds sang over quiet green hills and rivers ran to the sea".split()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(200)) for i in range(40)))
    sets = ["model.variant=pretrain", f"data.path={corpus}", "data.max_seq_length=128", "data.eval_split_ratio=0.2",
            "evaluation.strategy=steps", "evaluation.steps=2", "checkpointing.save_steps=100"]
    one, two = tmp_path / "lm1", tmp_path / "lm2"
    _train("tiny-llm-sft", one, *sets)
    progress = _train("tiny-llm-sft", two, *sets, "distributed.ddp_static_graph=true", processes=2, batch=1)
    assert _relative_difference(one, two) <= 1e-5
    start = next(r for r in progress if r.get("event") == "start")  # what DDP really ran with
    assert start["ddp"] == {"gradient_as_bucket_view": True, "static_graph": True}
    evals = [[r["eval_loss"] for r in read_progress(d) if r.get("event") == "eval"] for d in (one, two)]
    assert len(evals[0]) == len(evals[1]) == 1 and progress[-1]["event"] == "done"
    # Reduced over both ranks' halves of the eval set. Not bit-equal: the LM loss is a mean over the
    # tokens of a batch, and a batch that holds the shorter last block is weighted per rank when split.
    assert evals[1][0] == pytest.approx(evals[0][0], rel=1e-3)


def _rank_processes(leader: psutil.Process) -> list[psutil.Process]:
    out = []
    for child in leader.children(recursive=True):
        try:
            if "LOCAL_RANK" in child.environ():
                out.append(child)
        except psutil.Error:
            pass
    return out


def test_a_killed_rank_fails_the_job_quickly_and_the_run_resumes_from_its_checkpoint(tmp_path):
    run = tmp_path / "killed"
    sets = [*COMMON, "--set", "training.max_steps=400", "--set", "training.batch_size=1",
            "--set", "distributed.num_processes=2", "--set", f"distributed.main_process_port={_free_port()}",
            "--set", "checkpointing.save_steps=3", "--set", "checkpointing.auto_resume=true",
            "--set", f"job.output_dir={run}", "--set", f"job.name={run.name}"]
    log = open(tmp_path / "launcher.log", "wb")
    proc = subprocess.Popen(studio_cmd("train", "presets/tiny-sd15-lora.json", *sets), cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(run.glob("checkpoint-*/manifest.json")):
            assert proc.poll() is None and time.monotonic() < deadline, \
                "no checkpoint was written:\n" + (tmp_path / "launcher.log").read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        ranks = _rank_processes(psutil.Process(proc.pid))
        assert len(ranks) == 2
        victim = next(r for r in ranks if r.environ().get("LOCAL_RANK") == "1")
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        rc = proc.wait(timeout=120)  # the launcher ends the other rank; nothing waits forever
        assert rc != 0 and time.monotonic() - killed_at < 120
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(run) in " ".join(p.info["cmdline"] or [])]
    saved = max(int(p.parent.name.split("-")[1]) for p in run.glob("checkpoint-*/manifest.json"))
    # resume on the same number of processes, to a nearer end
    sets[sets.index("training.max_steps=400")] = f"training.max_steps={saved + 2}"
    sets[sets.index(next(s for s in sets if s.startswith("distributed.main_process_port")))] = \
        f"distributed.main_process_port={_free_port()}"
    out = run_studio("train", "presets/tiny-sd15-lora.json", *sets, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    progress = read_progress(run)
    resumed = [r for r in progress if r.get("event") == "resumed"]
    assert resumed and resumed[-1]["step"] >= saved
    assert progress[-1]["event"] == "done" and progress[-1]["step"] == saved + 2


def test_a_checkpoint_continues_on_another_process_count_with_the_same_global_batch_else_is_refused(tmp_path):
    """2 processes x batch 1 write checkpoint-3 of 6; 1 process x batch 2 (the same global batch of 2, in
    the same order) continues it exactly like an uninterrupted 1 x 2 run; 1 process x batch 1 is refused."""
    sets = ("checkpointing.save_steps=3",)
    straight, moved = tmp_path / "straight", tmp_path / "moved"
    _train("tiny-sd15-lora", straight, *sets, steps=6)
    _train("tiny-sd15-lora", moved, *sets, processes=2, batch=1, steps=6)
    shutil.rmtree(moved / "checkpoint-6")  # as if the 2-process run had stopped after step 3
    progress = _train("tiny-sd15-lora", moved, *sets, "checkpointing.auto_resume=true", steps=6)
    resumed = [r for r in progress if r.get("event") == "resumed"]
    assert resumed and resumed[-1]["step"] == 3 and progress[-1]["event"] == "done"
    assert _relative_difference(straight, moved) <= 1e-5
    losses = [[r["loss"] for r in read_progress(d) if "loss" in r] for d in (straight, moved)]
    assert losses[1][-3:] == pytest.approx(losses[0][-3:], rel=1e-5)  # steps 4-6, after the move

    shutil.rmtree(moved / "checkpoint-6")
    out = run_studio("train", "presets/tiny-sd15-lora.json", *COMMON, "--set", "training.max_steps=6",
                     "--set", "training.batch_size=1", "--set", "checkpointing.auto_resume=true",
                     "--set", f"job.output_dir={moved}", "--set", f"job.name={moved.name}", timeout=600)
    said = out.stdout + out.stderr + "".join(r.get("message", "") for r in read_progress(moved))
    assert out.returncode != 0
    assert "global batch of 2" in said and "this run has 1" in said and "1 process(es) x batch 2" in said


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without CUDA")
def test_default_device_on_a_machine_without_cuda_joins_the_ranks_into_one_group(tmp_path):
    """model.device=auto (the default) with 2 processes and no GPU: the ranks train together on the CPU
    (gloo), instead of each starting alone and writing the same run folder."""
    progress = _train("tiny-sd15-lora", tmp_path / "auto", "model.device=auto", processes=2, batch=1, steps=2)
    start = next(r for r in progress if r.get("event") == "start")
    assert (start["processes"], start["strategy"]) == (2, "MULTI_CPU") and progress[-1]["event"] == "done"
