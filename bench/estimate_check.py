"""The memory estimate (studio/config/vram.py) beside the peaks `bench --gpu` measures.

`estimated_vram_gb(name, spec, cfg)`: the estimate of a GPU-bench workload (its model built on the meta
device from the same config, so no weights), in GiB of allocated tensors, which is what the bench's peak
counts (torch.cuda.max_memory_allocated; the CUDA context is not in either).

`python -m bench.estimate_check [RESULTS.json ...]`: reads `bench --gpu` results (default
bench/results/gpu-full.json) and prints estimate / measured per workload and loop; exit 1 when one is
outside +-15 %.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

TOLERANCE = 0.15


def model_of(name: str, spec: dict):
    from accelerate import init_empty_weights

    from studio.config.model_shapes import model_from_shapes

    with init_empty_weights():
        if name == "sdxl":
            from diffusers import UNet2DConditionModel

            net, part = UNet2DConditionModel(**spec["unet"]), "unet"
            config = dict(net.config)
        elif name == "flux":
            from diffusers import FluxTransformer2DModel

            net, part = FluxTransformer2DModel(**spec["transformer"]), "transformer"
            config = dict(net.config)
        else:
            from transformers import LlamaConfig, LlamaForCausalLM

            net, part = LlamaForCausalLM(LlamaConfig(**spec["model"])), "model"
            config = net.config.to_dict()
    return model_from_shapes(config, {k: tuple(v.shape) for k, v in net.state_dict().items()}, part)


def estimated_vram_gb(name: str, spec: dict, cfg) -> float:
    from studio.config.vram import GIB, estimate_vram

    cfg = cfg.model_copy(deep=True)
    if name != "llm":
        cfg.data.cache_mode = "on"  # the image workloads train from "cached" latents: no VAE or text encoders
    return round(estimate_vram(cfg, model_of(name, spec)).tensors / GIB, 4)


def compare(result: dict) -> list[tuple[str, float, float, float]]:
    rows = []
    for name, w in result.get("workloads", {}).items():
        studio = w.get("loops", {}).get("studio", {})
        if "estimated_vram_gb" in studio and studio.get("peak_vram_gb"):
            rows.append((name, studio["peak_vram_gb"], studio["estimated_vram_gb"],
                         studio["estimated_vram_gb"] / studio["peak_vram_gb"]))
    return rows


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or [Path(__file__).parent / "results" / "gpu-full.json"]
    bad = 0
    for file in files:
        result = json.loads(file.read_text())
        checkpointing = "on" if result.get("gradient_checkpointing") else "off"
        for name, measured, estimated, ratio in compare(result):
            ok = abs(ratio - 1) <= TOLERANCE
            bad += not ok
            print(f"{file.name} {name} checkpointing {checkpointing}: measured {measured:.2f} GiB, estimated "
                  f"{estimated:.2f} GiB, ratio {ratio:.3f} {'ok' if ok else 'OUTSIDE +-15 %'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
