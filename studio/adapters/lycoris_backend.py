"""LyCORIS backend: every adapter type through lycoris-lora's `LycorisNetwork`.

LyCORIS wraps the chosen layers' `forward` (it does not replace modules) and keeps its weights in its
own network object, keyed the kohya way: `<prefix>_<module path with _>.<param>` (`lora_unet_...`),
which is the single-file format ComfyUI and A1111 read. Its targets are set through a preset, which
LyCORIS stores on the class, so every call here sets the whole preset first.
"""
from __future__ import annotations

import torch

from studio.registry.adapters import ADAPTERS

# adapter.type -> LyCORIS algo name (lycoris/wrapper.py `network_module_dict`), from the adapter registry
ALGOS = {kind: row.lycoris_algo for kind, row in ADAPTERS.items()}
MAIN_KEEPS_NAMES = False  # every network's keys carry its component name
KOHYA_KEYS = True  # weights are already keyed the kohya way: they are the ComfyUI file as they are
LYCORIS_CHILD = "studio_lycoris"  # the network is registered under its model: train()/eval()/to() reach it
# Class names LyCORIS targets for `full` without explicit targets: every weight layer.
ALL_LAYERS = ["Linear", "Conv1d", "Conv2d", "Conv3d"]


def lycoris_prefix(family, component: str) -> str:
    """Key prefix of a LyCORIS network: kohya's name for the component where the family has one."""
    return family.kohya_prefixes.get(component, f"lycoris_{component}")


def _set_preset(prefix: str, pattern: str | None, classes: list[str] | None = None) -> None:
    from lycoris import LycorisNetwork

    LycorisNetwork.apply_preset({
        "enable_conv": True, "target_module": list(classes or []), "target_name": [pattern + "$"] if pattern else [],
        "module_algo_map": {}, "name_algo_map": {}, "lora_prefix": prefix, "use_fnmatch": False,
        "exclude_name": [],
    })


def network_kwargs(kind: str, a, args: dict) -> dict:
    """Keyword arguments of `LycorisNetwork` (as lycoris' `create_lycoris` builds them)."""
    return dict(
        multiplier=1.0, lora_dim=a.rank, alpha=a.alpha, conv_lora_dim=a.conv_rank, conv_alpha=a.conv_alpha,
        dropout=a.dropout, rank_dropout=a.rank_dropout, module_dropout=a.module_dropout,
        use_tucker=a.lokr_use_tucker or bool(args.pop("use_tucker", False)), network_module=ALGOS[kind],
        decompose_both=a.lokr_decompose_both, factor=a.lokr_factor,
        use_scalar=a.lokr_use_scalar or bool(args.pop("use_scalar", False)),
        weight_decompose=kind == "dora" or a.lokr_weight_decompose or bool(args.pop("dora_wd", False)),
        wd_on_out=bool(args.pop("wd_on_output", True)), block_size=int(args.pop("block_size", 4)), **args,
    )


def create(module: torch.nn.Module, prefix: str, kind: str, a, args: dict, pattern: str | None):
    """Build, attach and return the LyCORIS network for `module`; its weights are fp32 on the module's device."""
    from lycoris import LycorisNetwork

    _set_preset(prefix, pattern, None if pattern else ALL_LAYERS)
    net = LycorisNetwork(module, warn_on_unmatched=False, **network_kwargs(kind, a, dict(args)))
    if not net.loras:
        raise ValueError(f"adapter.target_modules: LyCORIS '{ALGOS[kind]}' found no layer to adapt")
    net.apply_to()
    device = next(module.parameters()).device
    net.to(device=device, dtype=torch.float32)
    for lora in net.loras:
        if type(lora).__name__ == "DyLoraModule":
            _fix_dylora(lora)
    return net


def _fix_dylora(lora) -> None:
    """LyCORIS 4.1's DyLoRA scales a rank-b update by alpha / (block index + 1) and draws a random rank even
    in eval mode, while its saved file (full rank) is read as a LoRA at alpha / rank. Patched to the paper's
    rule (arXiv 2210.07558: a rank-b truncation scaled by alpha / b) and full rank outside training, so the
    trained network and its file agree."""
    import types

    cls = type(lora)

    def get_weight(self, rank):
        down, up, _ = cls.get_weight(self, rank)  # down: (b, in), up: (out, b)
        return down, up, self.alpha / down.shape[0]

    def get_random_rank_weight(self):
        if self.training:
            return cls.get_random_rank_weight(self)
        return self.get_weight(self.lora_dim - self.block_size)  # every block: the saved full-rank LoRA

    lora.get_weight = types.MethodType(get_weight, lora)
    lora.get_random_rank_weight = types.MethodType(get_random_rank_weight, lora)


def load_from_weights(module: torch.nn.Module, prefix: str, weights: dict[str, torch.Tensor]):
    """LyCORIS' own loader: rebuild the network a file describes on `module` (a fresh base network).
    Returns (network, unused keys): keys naming no layer of `module` or no known LyCORIS algo."""
    from lycoris import create_lycoris_from_weights

    _set_preset(prefix, None)
    net, _ = create_lycoris_from_weights(1.0, "", module, weights_sd=dict(weights))
    net.apply_to()
    device = next(module.parameters()).device
    net.to(device=device)
    loaded = {lora.lora_name for lora in net.loras}
    unused = sorted(k for k in weights if k.split(".", 1)[0] not in loaded)
    return net, unused


def state_dict(net) -> dict[str, torch.Tensor]:
    return dict(net.state_dict())


def load_state_dict(net, weights: dict[str, torch.Tensor]) -> list[str]:
    """Load a state dict written by `state_dict`; returns missing keys, raises on keys that fit nothing."""
    weights = dict(weights)
    for lora in net.loras:
        if type(lora).__name__ == "DyLoraModule":  # saved as one LoRA, trained as rank blocks
            weights.update(_dylora_blocks(lora, weights))
    result = net.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"adapter weights do not match this model: {len(result.unexpected_keys)} unexpected "
                         f"keys, e.g. {result.unexpected_keys[:3]}")
    return list(result.missing_keys)


def _dylora_blocks(lora, weights: dict) -> dict[str, torch.Tensor]:
    name, size = lora.lora_name, lora.block_size
    up, down = weights.pop(f"{name}.lora_up.weight", None), weights.pop(f"{name}.lora_down.weight", None)
    if up is None or down is None:
        return {}
    down = down.reshape(lora.lora_dim, -1)  # (rank, in) -> blocks of `size` rows
    out = {f"{name}.up_list.{i}": up[:, i * size:(i + 1) * size] for i in range(len(lora.up_list))}
    out.update({f"{name}.down_list.{i}": down[i * size:(i + 1) * size] for i in range(len(lora.down_list))})
    return out


def set_enabled(net, enabled: bool) -> None:
    net.set_multiplier(1.0 if enabled else 0.0)


def merge_and_unload(net) -> None:
    """Fold the update into the base weights (LyCORIS `merge_to`), then unhook the wrapped forwards."""
    with torch.no_grad():
        for lora in net.loras:
            if type(lora).__name__ == "FullModule":
                _merge_full(lora)
            elif type(lora).__name__ in ("LohaModule", "LokrModule"):
                _merge_factorised(lora)
            else:
                lora.merge_to(1.0)
                lora.restore()


def _merge_factorised(lora) -> None:
    """LyCORIS 4.1's LoHa/LoKr `merge_to` applies alpha / rank twice (`get_weight` already scales, then
    `get_diff_weight` scales again). Merge what their forward adds instead: get_weight x scalar."""
    layer = lora.org_module[0]
    base = layer.weight.data
    diff = lora.get_weight(lora.shape).to(base) * lora.scalar.to(base)
    merged = lora.apply_weight_decompose(base + diff, 1.0) if lora.wd else base + diff
    lora.restore()
    layer.weight.data.copy_(merged.reshape(base.shape))


def _merge_full(lora) -> None:
    """`full` moved the layer's weight into the LyCORIS module (its `restore` puts the original back):
    give the layer the trained weight instead, on the layer's device and dtype."""
    weight, bias = lora.make_weight(1.0, lora.weight.device)
    dtype = lora.org_weight.dtype
    lora.restore()
    layer = lora.org_module[0]
    layer.weight = torch.nn.Parameter(weight.detach().to(dtype), requires_grad=False)
    if bias is not None:
        layer.bias = torch.nn.Parameter(bias.detach().to(dtype), requires_grad=False)


# ---- the backend functions studio/adapters calls (the same set in peft_backend.py) ---------------
def attach(family, name: str, net: torch.nn.Module, kind: str, a, args: dict, spec, is_main: bool):
    """Build the LyCORIS network of `kind` on `net` and register it there; returns the network."""
    spec.all_layers = kind == "full" and not a.target_modules and is_main
    network = create(net, lycoris_prefix(family, name), kind, a, args, spec.lycoris_pattern())
    net.add_module(LYCORIS_CHILD, network)
    return network


def parameters(net: torch.nn.Module, adapter) -> dict[str, torch.nn.Parameter]:
    return dict(adapter.named_parameters())


def weights(net: torch.nn.Module, adapter) -> dict[str, torch.Tensor]:
    return state_dict(adapter)


def load_weights(net: torch.nn.Module, adapter, sd: dict[str, torch.Tensor]) -> list[str]:
    return load_state_dict(adapter, sd)


def enable(net: torch.nn.Module, adapter, enabled: bool) -> None:
    set_enabled(adapter, enabled)


def merge(net: torch.nn.Module, adapter) -> None:
    merge_and_unload(adapter)
    delattr(net, LYCORIS_CHILD)


def peft_config(adapter):
    return None  # LyCORIS networks have no PEFT config


def layer_count(net: torch.nn.Module, adapter) -> int:
    return len(adapter.loras)
