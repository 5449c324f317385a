"""The speed engines of the `memory` section (issue #16), each off by default: which PyTorch attention kernel
runs, torch.compile of the whole network or of its repeated blocks, channels-last convolutions. The check
that refuses an engine this machine cannot run is `engine_problems` (studio/config/sections/runtime.py).

The defaults stay the plain path until a GPU measurement (`bench --gpu`, bench/README.md) backs a change.
"""
from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch

# memory.attention_backend -> torch.nn.attention.SDPBackend member
SDPA_KERNELS = {"math": "MATH", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                "cudnn": "CUDNN_ATTENTION"}


def attention_kernel(cfg):
    """A factory of the context that forces memory.attention_backend's PyTorch SDPA kernel (a no-op context
    when PyTorch, or a package, picks). Enter it around forward and backward: gradient checkpointing
    recomputes attention during the backward, and a different kernel there fails the checkpoint check."""
    name = cfg.memory.attention_backend
    if name not in SDPA_KERNELS:
        return nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return partial(sdpa_kernel, getattr(SDPBackend, SDPA_KERNELS[name]))


def compile_options(cfg) -> dict:
    """torch.compile's arguments from memory.compile_backend / compile_mode."""
    mem = cfg.memory
    return {"backend": mem.compile_backend, **({"mode": mem.compile_mode} if mem.compile_mode != "default" else {})}


def compile_network(family, cfg) -> int:
    """memory.torch_compile: the family's network compiled whole or block by block (memory.compile_scope).
    Called once the adapter is in, so its layers are compiled with the blocks that hold them."""
    return family.compile(cfg.memory.compile_scope == "blocks", compile_options(cfg))


def apply_engines(family, cfg) -> None:
    """The engines that change the loaded network before training: channels-last convolutions, flash-attn."""
    if cfg.memory.channels_last:
        to_channels_last(family.trainable_module())
    if cfg.memory.attention_backend == "flash_attn":
        family.use_flash_attn()


def to_channels_last(module: torch.nn.Module) -> int:
    """Convolution weights in NHWC (channels-last) layout; returns how many convolutions were converted.
    Their outputs follow the weights' layout, so activations become channels-last from the first conv on."""
    # Frozen ones only: trainable weights are saved to safetensors, which takes contiguous (NCHW) tensors.
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d) and not m.weight.requires_grad]
    for conv in convs:
        conv.to(memory_format=torch.channels_last)
    return len(convs)
