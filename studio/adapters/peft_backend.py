"""PEFT backend: lora, dora, loha, lokr, oft, boft and ia3 injected into a network by PEFT itself.

Every method starts as the identity (LoRA's B, LoHa/LoKr's second factor at zero, OFT's rotation at I,
IA3's scales at 1), so the untrained model is unchanged. Weights are read and written with PEFT's own
`get_peft_model_state_dict` / `set_peft_model_state_dict` (keys without the adapter name).
"""
from __future__ import annotations

import torch

ADAPTER_NAME = "default"
MAIN_KEEPS_NAMES = True  # the main network's keys are PEFT's own, without a component prefix
KOHYA_KEYS = False  # weights are PEFT-keyed: the family's own layout writes them, kohya needs converting


def build_config(kind: str, a, targets, args: dict):
    """The PEFT config of `adapter.type` from the section `a` and the parsed `network_args`, built by the
    function the type's row of the adapter registry names."""
    from studio.registry.adapters import ADAPTERS
    from studio.registry.families import load_attr

    row = ADAPTERS[kind]
    if row.peft_config is None:
        raise ValueError(f"adapter.type: PEFT has no '{kind}'")
    return load_attr(row.peft_config)(a, targets, args)


# ---- one config builder per type (named by studio/registry/adapters.py) ---------------------------
def lora_config(a, targets, args: dict, use_dora: bool = False):
    from peft import LoraConfig

    # Gaussian init of A (B is zero) as diffusers' LoRA examples: the model starts unchanged.
    return LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=targets,
                      use_dora=use_dora, bias=a.bias, **{"init_lora_weights": "gaussian", **args})


def dora_config(a, targets, args: dict):
    return lora_config(a, targets, args, use_dora=True)


def loha_config(a, targets, args: dict):
    from peft import LoHaConfig

    return LoHaConfig(r=a.rank, alpha=a.alpha, rank_dropout=a.rank_dropout, module_dropout=a.module_dropout,
                      target_modules=targets, **args)


def lokr_config(a, targets, args: dict):
    from peft import LoKrConfig

    return LoKrConfig(r=a.rank, alpha=a.alpha, rank_dropout=a.rank_dropout, module_dropout=a.module_dropout,
                      decompose_both=a.lokr_decompose_both, decompose_factor=a.lokr_factor,
                      use_effective_conv2d=a.lokr_use_tucker, target_modules=targets, **args)


def oft_config(a, targets, args: dict):
    from peft import OFTConfig

    # `rank` is the block size: each block of `rank` input features gets its own rotation
    return OFTConfig(r=0, oft_block_size=a.rank, module_dropout=a.module_dropout, bias=a.bias,
                     target_modules=targets, **args)


def boft_config(a, targets, args: dict):
    from peft import BOFTConfig

    return BOFTConfig(boft_block_size=a.rank, boft_dropout=a.module_dropout, bias=a.bias,
                      target_modules=targets, **args)


def ia3_config(a, targets, args: dict):
    from peft import IA3Config

    # no feed-forward modules: every target scales its output
    return IA3Config(target_modules=targets, feedforward_modules=[], **args)


def config_from_dict(data: dict):
    """A PEFT config from its `to_dict()` / adapter_config.json form (class picked by `peft_type`)."""
    from peft import PeftConfig

    data = {k: v for k, v in data.items() if k not in ("auto_mapping",)}
    return PeftConfig.from_peft_type(**data)


def inject(module: torch.nn.Module, config) -> None:
    """Put the adapter's layers into `module` with PEFT's own `inject_adapter_in_model`.

    Never through the `add_adapter` of diffusers' or transformers' PEFT mixin: those gate on the PEFT
    version they expect (transformers 5.24 refuses PEFT < 0.22 there), so a release of one library
    could stop every job. The two attributes the mixins read are set the way `add_adapter` sets them,
    so `load_lora_weights`, `disable_adapters` and friends still see the adapter.
    """
    from peft import inject_adapter_in_model

    inject_adapter_in_model(config, module, adapter_name=ADAPTER_NAME)
    module.peft_config = {ADAPTER_NAME: config}
    if hasattr(module, "add_adapter"):  # a diffusers/transformers model: mark it as the mixin would
        module._hf_peft_config_loaded = True


def state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(module, adapter_name=ADAPTER_NAME)


def load_state_dict(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> list[str]:
    """Load weights saved by `state_dict`; returns the adapter keys the file lacked (unexpected keys raise)."""
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(module, weights, adapter_name=ADAPTER_NAME)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"adapter weights do not match this model: {len(unexpected)} unexpected keys, "
                         f"e.g. {unexpected[:3]}")
    expected = set(state_dict(module))
    return sorted(expected - set(weights))


def tuner_layers(module: torch.nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, m) for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)]


def set_enabled(module: torch.nn.Module, enabled: bool) -> None:
    for _, layer in tuner_layers(module):
        layer.enable_adapters(enabled)


def merge_and_unload(module: torch.nn.Module) -> None:
    """Fold every adapter layer into its base weight and put the plain base layer back in its place
    (what `PeftModel.merge_and_unload` does, for a network injected without a PeftModel wrapper)."""
    from peft.tuners.tuners_utils import _get_submodules

    for name, layer in tuner_layers(module):
        if not hasattr(layer, "base_layer"):
            continue  # a container of adapter layers, not an adapted layer
        layer.merge(safe_merge=True, adapter_names=[ADAPTER_NAME])
        parent, _, child = _get_submodules(module, name)
        setattr(parent, child, layer.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if hasattr(module, attr):
            delattr(module, attr) if attr == "peft_config" else setattr(module, attr, False)


# ---- the backend functions studio/adapters calls (the same set in lycoris_backend.py) -------------
def attach(family, name: str, net: torch.nn.Module, kind: str, a, args: dict, spec, is_main: bool):
    """Inject the adapter of `kind` into `net`; returns its PEFT config. Trainable weights are fp32."""
    config = build_config(kind, a, spec.peft_value(), args)
    inject(net, config)
    for p in net.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return config


def parameters(net: torch.nn.Module, adapter) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in net.named_parameters() if p.requires_grad}


def weights(net: torch.nn.Module, adapter) -> dict[str, torch.Tensor]:
    return state_dict(net)


def load_weights(net: torch.nn.Module, adapter, sd: dict[str, torch.Tensor]) -> list[str]:
    return load_state_dict(net, sd)


def enable(net: torch.nn.Module, adapter, enabled: bool) -> None:
    set_enabled(net, enabled)


def merge(net: torch.nn.Module, adapter) -> None:
    merge_and_unload(net)


def peft_config(adapter):
    return adapter


def layer_count(net: torch.nn.Module, adapter) -> int:
    """Adapted layers (containers of adapter layers do not count)."""
    return sum(1 for _, layer in tuner_layers(net) if hasattr(layer, "base_layer"))
