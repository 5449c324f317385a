"""`python -m bench.fsdp2_gpus`: the FSDP2 check that needs two CUDA GPUs (the CPU cannot run it).

accelerate turns FSDP on only for GPU processes: on a CPU, `distributed.strategy=fsdp2` runs as plain
CPU data parallelism (MULTI_CPU), so the trainer's FSDP2 path cannot be tested by the suite. This
script is that test on a machine with 2 GPUs, through `python -m studio train` as users start it:

    1 process  x batch 2                  the reference (tiny causal LM, LoRA, fp32)
    2 processes x batch 1, fsdp2           must end with the same adapter (relative difference <= 1e-5)
    the fsdp2 run again from checkpoint-3  (its final checkpoint removed): must end the same again

Today the studio refuses fsdp2 at validation (the trainer does not gather sharded weights for
checkpoints and exports yet); the script then reports that refusal and exits 3. When the gathering
is built and the refusal lifted, this is the check to pass before saying FSDP2 works.
Writes bench/results/fsdp2-gpus.json. Exit 0: passed; 1: a difference; 2: not 2 GPUs; 3: refused.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.processes import REPO, RESULTS, _port

STEPS, LIMIT = 6, 1e-5


def _gpus() -> int:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                         capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def _train(home: Path, run: Path, corpus: Path, processes: int, batch: int, *extra: str):
    sets = {"model.device": "cuda", "memory.mixed_precision": "no", "model.variant": "pretrain",
            "data.path": str(corpus), "data.max_seq_length": 128, "training.max_steps": STEPS,
            "training.batch_size": batch, "distributed.num_processes": processes,
            "distributed.main_process_port": _port(), "checkpointing.save_steps": 3, "logging.logging_steps": 1,
            "sampling.every_steps": 0, "sampling.at_end": "false", "job.output_dir": str(run), "job.name": run.name}
    if processes > 1:
        sets["distributed.strategy"] = "fsdp2"
    argv = [sys.executable, "-m", "studio", "train", "presets/tiny-llm-sft.json", "--no-progress"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    for item in extra:
        argv += ["--set", item]
    return subprocess.run(argv, cwd=REPO, env={**os.environ, "STUDIO_HOME": str(home)},
                          capture_output=True, text=True, timeout=1800)


def _relative_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    if wa.keys() != wb.keys():
        return float("inf")
    num = sum(float(((wa[k] - wb[k]) ** 2).sum()) for k in wa) ** 0.5
    return num / sum(float((wa[k] ** 2).sum()) for k in wa) ** 0.5


def main() -> int:
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "gpus": _gpus(), "limit": LIMIT}
    if result["gpus"] < 2:
        print(f"needs 2 CUDA GPUs, found {result['gpus']}")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-fsdp2-") as tmp:
        home = Path(tmp)
        words = "the cat sat on a mat while birds sang over quiet green hills and rivers ran to the sea".split()
        corpus = home / "corpus.txt"
        corpus.write_text("\n\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(200))
                                      for i in range(40)))
        one, two = home / "one", home / "two"
        out = _train(home, one, corpus, 1, 2)
        if out.returncode != 0:
            raise RuntimeError(f"the 1-process reference failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        out = _train(home, two, corpus, 2, 1)
        if out.returncode == 2:  # refused at validation, before anything loaded
            result["refused"] = (out.stdout + out.stderr).strip()[-2000:]
            print(f"fsdp2 is refused by the studio:\n{result['refused']}")
            code = 3
        elif out.returncode != 0:
            raise RuntimeError(f"the fsdp2 run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        else:
            result["relative_difference"] = _relative_difference(one, two)
            shutil.rmtree(two / f"checkpoint-{STEPS}")  # as if it had stopped after checkpoint-3
            out = _train(home, two, corpus, 2, 1, "checkpointing.auto_resume=true")
            if out.returncode != 0:
                raise RuntimeError(f"the fsdp2 resume failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            result["relative_difference_after_resume"] = _relative_difference(one, two)
            passed = max(result["relative_difference"], result["relative_difference_after_resume"]) <= LIMIT
            print(json.dumps(result, indent=2))
            code = 0 if passed else 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fsdp2-gpus.json").write_text(json.dumps(result, indent=2) + "\n")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
