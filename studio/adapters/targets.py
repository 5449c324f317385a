"""Which layers get the adapter: `adapter.target_modules` and `attention_type` turned into one pattern.

A target name matches a module path at its end (PEFT's list semantics: `to_q` matches
`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`). `attention_type` self/cross keeps only
the attention layers under the family's self- or cross-attention parents (SD: `attn1` / `attn2`, from
`family.attention_scopes()`); targets outside attention (convolutions, MLPs) are kept as listed.
The same pattern drives PEFT (`target_modules` as a full-match regex) and LyCORIS (`target_name`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

# Layer classes the backends can adapt (transformers' GPT-2 style Conv1D included by name).
ADAPTABLE = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


@dataclass
class TargetSpec:
    names: list[str]  # the target names as the user (or the family) gave them
    pattern: str | None  # full-match regex over module paths; None = plain suffix list `names`
    modules: list[str] = field(default_factory=list)  # module paths selected in the network
    all_layers: bool = False  # LyCORIS `full` without targets: every Linear/Conv layer

    def lycoris_pattern(self) -> str | None:
        return None if self.all_layers else self.regex()

    def peft_value(self) -> list[str] | str:
        """PEFT's `target_modules`: the readable list when it suffices, else the regex."""
        return self.pattern if self.pattern is not None else list(self.names)

    def regex(self) -> str:
        return self.pattern if self.pattern is not None else _suffix(self.names)


def _alt(names) -> str:
    return "(?:" + "|".join(re.escape(n) for n in names) + ")"


def _suffix(names) -> str:
    return r"(?:.*\.)?" + _alt(names)


def is_adaptable(module: torch.nn.Module) -> bool:
    return isinstance(module, ADAPTABLE) or type(module).__name__ == "Conv1D"


def resolve_targets(network: torch.nn.Module, cfg_adapter, defaults: list[str], scopes: dict[str, str],
                    extra: list[str] = (), scoped: bool = True) -> TargetSpec:
    """Targets of one network. `defaults`: the family's names when `target_modules` is empty; `extra`:
    names always added (convolutions for LoCon); `scoped=False` ignores attention_type (text encoders)."""
    a = cfg_adapter
    names = list(dict.fromkeys([*(a.target_modules or defaults), *extra]))
    pattern = None
    per_scope = {"self": a.self_target_modules, "cross": a.cross_target_modules}
    if scoped and (a.attention_type != "both" or any(per_scope.values())):
        active = ("self", "cross") if a.attention_type == "both" else (a.attention_type,)
        missing = [s for s in active if s not in scopes]
        if missing:
            raise ValueError(f"adapter.attention_type: this model family has no {missing[0]}-attention layers "
                             f"to single out (it knows: {', '.join(scopes) or 'none'}); use 'both'")
        parts = [f"{scopes[s]}\\.{_alt(per_scope[s] or names)}" for s in active]
        # Names outside any attention block (convolutions, MLPs) keep matching; attention ones only in `active`.
        outside = rf"(?!(?:.*\.)?(?:{'|'.join(scopes.values())})\.){_suffix(names)}"
        pattern = rf"(?:(?:.*\.)?(?:{'|'.join(parts)})|{outside})"
    spec = TargetSpec(names=names, pattern=pattern)
    regex = re.compile(spec.regex())
    spec.modules = [n for n, m in network.named_modules() if n and regex.fullmatch(n) and is_adaptable(m)]
    _check_every_name_matched(spec, a, per_scope if scoped else {})
    return spec


def _check_every_name_matched(spec: TargetSpec, a, per_scope: dict[str, list[str]]) -> None:
    if not spec.modules:
        raise ValueError(f"adapter.target_modules: none of {spec.names} matched a Linear/Conv layer of the "
                         "model" + (f" with attention_type '{a.attention_type}'" if a.attention_type != "both" else ""))
    for field_name, names in (("target_modules", a.target_modules), *((f"{s}_target_modules", v)
                                                                      for s, v in per_scope.items())):
        for name in names or ():
            if not any(m == name or m.endswith("." + name) for m in spec.modules):
                raise ValueError(f"adapter.{field_name}: '{name}' matches no adaptable layer"
                                 + (f" of the kind attention_type '{a.attention_type}' keeps"
                                    if a.attention_type != "both" else "")
                                 + f"; layers that matched other names: {spec.modules[:3]}")
