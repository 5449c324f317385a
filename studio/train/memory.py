"""Memory engines of the training step that are not a family's business: activations kept for the backward
pass moved to system RAM (`memory.activation_offload`, torch's `save_on_cpu`)."""
from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch


def saved_activations(cfg, device: torch.device):
    """A factory of the context for the forward pass: tensors autograd keeps for backward go to CPU memory
    and come back when backward needs them (pinned memory on CUDA for faster copies); a no-op context
    when the setting is off. Decided once, entered every step."""
    if not cfg.memory.activation_offload:
        return nullcontext
    return partial(torch.autograd.graph.save_on_cpu, pin_memory=device.type == "cuda")


class FusedBackwardOptimizer(torch.optim.Optimizer):
    """`optimizer.fused_backward_pass`: one optimizer per trainable tensor, stepped by a hook the moment
    backward has finished that tensor's gradient, which is then freed; so the gradients of the whole
    network never exist at once (PyTorch's "optimizer step in backward" recipe,
    `Tensor.register_post_accumulate_grad_hook`). To the loop, the scheduler and the checkpoints it is one
    optimizer: `param_groups` are the inner optimizers' own groups (an LR set here reaches them), `step` and
    `zero_grad` have nothing left to do, and the state dict holds every inner optimizer's state."""

    def __init__(self, param_groups: list[dict], build):
        """`build(groups)` makes one optimizer of the run's kind for a list of param groups."""
        self.inner = [build([{**group, "params": [p]}]) for group in param_groups for p in group["params"]]
        self.defaults = dict(self.inner[0].defaults) if self.inner else {}
        self.param_groups = [g for opt in self.inner for g in opt.param_groups]
        self.state = {}
        # torch.optim.Optimizer's hook registries, read by LR schedulers and profilers
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}
        self._optimizer_state_dict_pre_hooks, self._optimizer_state_dict_post_hooks = {}, {}
        self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = {}, {}
        self._zero_grad_profile_name = "FusedBackwardOptimizer.zero_grad"
        for opt in self.inner:
            for p in opt.param_groups[0]["params"]:
                p.register_post_accumulate_grad_hook(self._stepper(opt))

    @staticmethod
    def _stepper(opt: torch.optim.Optimizer):
        def step_now(param: torch.Tensor) -> None:
            opt.step()
            opt.zero_grad(set_to_none=True)  # this tensor's gradient is freed now, not after backward

        return step_now

    def step(self, closure=None):
        return None  # every tensor was stepped inside backward

    def zero_grad(self, set_to_none: bool = True) -> None:
        return None  # every gradient was freed inside backward

    def state_dict(self) -> dict:
        inner = [opt.state_dict() for opt in self.inner]
        # "state": every tensor's state by position (what the finiteness check reads); "per_parameter": to load.
        state = {i: s for i, sd in enumerate(inner) for s in sd["state"].values()}
        return {"state": state, "param_groups": [g for sd in inner for g in sd["param_groups"]],
                "per_parameter": inner}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("per_parameter")
        if saved is None or len(saved) != len(self.inner):
            raise ValueError("optimizer.fused_backward_pass: this checkpoint's optimizer state was not written by "
                             f"a fused-backward run of the same {len(self.inner)} trainable tensors; resume with the "
                             "setting as it was, or start a new run from its adapter (adapter.init_from)")
        for opt, sd in zip(self.inner, saved):
            opt.load_state_dict(sd)
        self.param_groups[:] = [g for opt in self.inner for g in opt.param_groups]  # loading made new groups


def swap_blocks(model: torch.nn.Module, count: int, device: torch.device) -> list[torch.nn.Module]:
    """`memory.blocks_to_swap`: the last `count` blocks of the model's block stacks (its ModuleLists, in
    order) keep their frozen weights in system RAM; diffusers' group offloading (leaf level) brings each
    layer's weights to the device just before it runs and sends them back after. Called before the adapter
    is injected, so the adapter's own weights (new layers beside the hooked ones) stay on the device.
    With gradient checkpointing a block's weights come back once more for its recomputation in backward."""
    from diffusers.hooks import apply_group_offloading

    blocks = [block for child in model.children() if isinstance(child, torch.nn.ModuleList) for block in child]
    if count > len(blocks):
        raise ValueError(f"memory.blocks_to_swap: {count} is more than the {len(blocks)} blocks of "
                         f"{type(model).__name__}; choose at most {len(blocks)}")
    swapped = blocks[len(blocks) - count:]
    for block in swapped:
        apply_group_offloading(block, onload_device=device, offload_device=torch.device("cpu"),
                               offload_type="leaf_level")
    return swapped
