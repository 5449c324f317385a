"""Memory engines of the training step that are not a family's business: activations kept for the backward
pass moved to system RAM (`memory.activation_offload`, torch's `save_on_cpu`)."""
from __future__ import annotations

from contextlib import nullcontext

import torch


def saved_activations(cfg, device: torch.device):
    """Context for the forward pass: tensors autograd keeps for backward go to CPU memory and come back
    when backward needs them (pinned memory on CUDA for faster copies); a no-op when the setting is off."""
    if not cfg.memory.activation_offload:
        return nullcontext()
    return torch.autograd.graph.save_on_cpu(pin_memory=device.type == "cuda")
