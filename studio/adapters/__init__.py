"""Adapters: one handle over whichever backend (PEFT or LyCORIS) implements `adapter.type`.

The trainer only uses `AdapterHandle`: trainable parameters (and their optimizer groups), state dicts
in and out, and `save(out_dir)`, which writes `adapter_model.safetensors` + `adapter_config.json` and,
for families with a kohya layout, `<job name>_kohya.safetensors`. Exports, verification and merging
live in `export.py` / `verify.py`.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch

from studio.adapters.lycoris_backend import LYCORIS_CHILD, lycoris_prefix  # noqa: F401 - public names
from studio.adapters.targets import TargetSpec, resolve_targets
from studio.registry.adapters import BACKENDS


def backend_module(backend: str):
    """The module implementing `backend` (studio/registry/adapters.py `BACKENDS`). Each one offers the same
    functions: attach, parameters, weights, load_weights, enable, merge, peft_config."""
    import importlib

    return importlib.import_module(BACKENDS[backend])


class AdapterHandle:
    """The adapter on every network that carries it (`components`: name -> network, the main one first)."""

    def __init__(self, family, cfg, kind: str, backend: str, components: dict[str, torch.nn.Module],
                 adapters: dict[str, object], targets: dict[str, TargetSpec]):
        self.family, self.cfg, self.kind, self.backend = family, cfg, kind, backend
        self.impl = backend_module(backend)
        self.components, self.adapters, self.targets = components, adapters, targets
        self.main = next(iter(components))
        self.merged = False

    @property
    def module(self) -> torch.nn.Module:
        return self.components[self.main]

    @property
    def config(self):
        """The main network's PEFT config (None for LyCORIS)."""
        return self.impl.peft_config(self.adapters[self.main])

    # ---- parameters --------------------------------------------------------------------------------
    def _component_named(self, name: str) -> dict[str, torch.nn.Parameter]:
        return self.impl.parameters(self.components[name], self.adapters[name])

    def named_trainable(self) -> dict[str, torch.nn.Parameter]:
        """Unique names over all networks (the main PEFT network keeps its own names)."""
        out = {}
        for name in self.components:
            prefix = "" if (name == self.main and self.impl.MAIN_KEEPS_NAMES) else f"{name}."
            out.update({prefix + n: p for n, p in self._component_named(name).items()})
        return out

    def trainable_params(self) -> list[torch.nn.Parameter]:
        return list(self.named_trainable().values())

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: the main network at `lr`, text encoders at `adapter.text_encoder_lr`."""
        groups = [{"params": list(self._component_named(self.main).values()), "lr": lr}]
        others = [p for name in self.components if name != self.main for p in self._component_named(name).values()]
        if others:
            groups.append({"params": others, "lr": self.cfg.adapter.text_encoder_lr})
        return groups

    # ---- weights -----------------------------------------------------------------------------------
    def component_state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per network: PEFT keys without the adapter name, or LyCORIS' kohya-style keys; fp32 on the CPU."""
        out = {}
        for name, net in self.components.items():
            raw = self.impl.weights(net, self.adapters[name])
            out[name] = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in raw.items()}
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.component_state_dicts()[self.main]

    def load_component_state_dicts(self, weights: dict[str, dict[str, torch.Tensor]]) -> list[str]:
        """Load per-network weights; returns the adapter keys none of them provided."""
        missing = []
        for name, sd in weights.items():
            if name not in self.components:
                raise ValueError(f"adapter weights for '{name}', which this run does not adapt "
                                 f"(adapted: {', '.join(self.components)})")
            missing += self.impl.load_weights(self.components[name], self.adapters[name], sd)
        return missing

    def load_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        self.load_component_state_dicts({self.main: weights})

    def save(self, out_dir: Path, step: int | None = None) -> list[Path]:
        """Write the adapter files into `out_dir` (each file atomically); returns their paths."""
        from studio.adapters.writer import write_adapter_files

        return write_adapter_files(self, Path(out_dir), step=step)

    # ---- switching ---------------------------------------------------------------------------------
    @contextmanager
    def disabled(self):
        """The base model's behaviour: adapters bypassed (not removed) inside the block."""
        self._set_enabled(False)
        try:
            yield
        finally:
            self._set_enabled(True)

    def _set_enabled(self, enabled: bool) -> None:
        for name, net in self.components.items():
            self.impl.enable(net, self.adapters[name], enabled)

    @contextmanager
    def eval_mode(self):
        """Dropouts and random ranks off inside the block; training flags restored after."""
        flags = {name: net.training for name, net in self.components.items()}
        for net in self.components.values():
            net.eval()
        try:
            yield
        finally:
            for name, net in self.components.items():
                net.train(flags[name])

    def merge_into_base(self) -> None:
        """Fold the adapter into the base weights in place; the handle is spent afterwards."""
        for name, net in self.components.items():
            net.eval()  # no dropout, and DyLoRA at full rank
            self.impl.merge(net, self.adapters[name])
        self.merged = True


def inject_adapter(family, cfg) -> AdapterHandle:
    """Add the configured adapter to the family's networks; trainable weights are fp32."""
    from studio.config.kv import parse_key_values

    a = cfg.adapter
    kind, backend = a.type, a.backend_for(cfg.model.family)
    impl = backend_module(backend)
    args = parse_key_values(a.network_args)
    components = family.adapter_components(text_encoders=a.train_text_encoder)
    main = next(iter(components))
    adapters, targets = {}, {}
    for name, net in components.items():
        targets[name] = spec = _targets_for(family, a, name, net, is_main=name == main)
        adapters[name] = impl.attach(family, name, net, kind, a, args, spec, is_main=name == main)
    handle = AdapterHandle(family, cfg, kind, backend, components, adapters, targets)
    if not handle.trainable_params():
        raise ValueError(f"adapter.target_modules: none of {targets[main].names} matched a layer of the model")
    if a.init_from:
        _start_from(handle, a.init_from)
    return handle


def _start_from(handle: AdapterHandle, path: str) -> None:
    from studio.adapters.writer import read_adapter_folder

    weights = read_adapter_folder(path, handle, field="adapter.init_from")
    try:
        missing = handle.load_component_state_dicts(weights)
    except (RuntimeError, ValueError) as err:  # shapes or names of another rank / type / layer set
        raise ValueError(f"adapter.init_from: {path} does not fit this adapter (same type, rank and target "
                         f"layers needed): {err}") from None
    if missing:
        raise ValueError(f"adapter.init_from: {path} lacks {len(missing)} weights this adapter has, e.g. "
                         f"{missing[:3]} (same type, rank and target layers needed)")


def _targets_for(family, a, name: str, net, is_main: bool) -> TargetSpec:
    if not is_main:  # text encoders: the family's projections; the user's lists are the main network's
        no_user_lists = SimpleNamespace(attention_type="both", target_modules=[], self_target_modules=[],
                                        cross_target_modules=[])
        return resolve_targets(net, no_user_lists, family.default_targets(name), {}, scoped=False)
    extra = family.conv_targets() if a.conv_rank > 0 else []  # the config allows it only where it applies
    return resolve_targets(net, a, family.default_targets(), family.attention_scopes(), extra=extra)

