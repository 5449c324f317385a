"""The adapter registry: one row per `adapter.type` (organised like PEFT's tuners: a type is one entry).

A row says which backends implement the type, the PEFT config builder (a `"module:function"` string,
imported when used), the LyCORIS algo name, the export formats PEFT's weights convert to, and the
config rules (`network_args` keys, which dropouts and options the PEFT version has). The config schema
checks settings against these rows; `studio/adapters` builds and exports from them.

Backends (`BACKENDS`): PEFT (files load in diffusers / PEFT directly) and LyCORIS (every type; writes
the kohya keys that ComfyUI and A1111 read). `adapter.backend = auto` picks, per family, the backend
whose files that family's users load: PEFT where it has the type, except on families whose ComfyUI
file uses kohya keys (trait `kohya_keys`) for types whose PEFT weights have no kohya form there
(OFT, BOFT, (IA)^3): those train with LyCORIS so that the run ends with a ComfyUI file.
"""
from __future__ import annotations

from dataclasses import dataclass

# backend id -> the module implementing studio/adapters' backend functions
BACKENDS = {"peft": "studio.adapters.peft_backend", "lycoris": "studio.adapters.lycoris_backend"}
_PEFT = "studio.adapters.peft_backend"

# `network_args` keys of LyCORIS (lycoris/wrapper.py `create_lycoris` keyword arguments), any type.
LYCORIS_ARGS = ("use_tucker", "use_scalar", "block_size", "constraint", "rescaled", "dora_wd", "wd_on_output",
                "full_matrix", "bypass_mode", "unbalanced_factorization", "train_norm", "rank_dropout_scale")


@dataclass(frozen=True)
class AdapterRow:
    type: str
    lycoris_algo: str  # LyCORIS `network_module` (lycoris/wrapper.py `network_module_dict`)
    peft_config: str | None = None  # "module:function" building the PEFT config; None = PEFT lacks the type
    peft_args: tuple[str, ...] = ()  # `network_args` keys of the PEFT config class, beyond our own fields
    peft_kohya: bool = False  # PEFT's weights convert to kohya/ComfyUI keys (formats.peft_to_kohya)
    peft_dropouts: tuple[str, ...] = ()  # which of dropout / rank_dropout / module_dropout PEFT's version has
    peft_bias: bool = False  # PEFT trains biases for it (`adapter.bias`)
    lycoris_conv: bool = False  # LyCORIS adapts 3x3 convolutions with it (`adapter.conv_rank`)
    # Trainable numbers per adapted (out x in) weight at rank r, for the memory estimate (studio/config/vram.py):
    # "low_rank" r(in+out) (LoRA-like), "hadamard" 2r(in+out) (LoHa), "block" r x in (OFT blocks), "vector" out
    # ((IA)^3), "full" in x out (every weight trained).
    size: str = "low_rank"

    @property
    def backends(self) -> tuple[str, ...]:
        return ("peft", "lycoris") if self.peft_config else ("lycoris",)


ADAPTERS: dict[str, AdapterRow] = {row.type: row for row in (
    AdapterRow("lora", "lora", f"{_PEFT}:lora_config", ("use_rslora", "init_lora_weights", "fan_in_fan_out"),
               peft_kohya=True, peft_dropouts=("dropout",), peft_bias=True),
    AdapterRow("dora", "lora", f"{_PEFT}:dora_config", ("use_rslora", "init_lora_weights", "fan_in_fan_out"),
               peft_kohya=True, peft_dropouts=("dropout",), peft_bias=True),
    AdapterRow("loha", "loha", f"{_PEFT}:loha_config", ("use_effective_conv2d", "init_weights"), peft_kohya=True,
               peft_dropouts=("rank_dropout", "module_dropout"), lycoris_conv=True, size="hadamard"),
    AdapterRow("lokr", "lokr", f"{_PEFT}:lokr_config", ("use_effective_conv2d", "rank_dropout_scale", "init_weights"),
               peft_kohya=True, peft_dropouts=("rank_dropout", "module_dropout"), lycoris_conv=True),
    AdapterRow("oft", "diag-oft", f"{_PEFT}:oft_config",
               ("coft", "eps", "block_share", "use_cayley_neumann", "num_cayley_neumann_terms", "init_weights"),
               peft_dropouts=("module_dropout",), peft_bias=True, size="block"),
    AdapterRow("boft", "boft", f"{_PEFT}:boft_config", ("boft_block_num", "boft_n_butterfly_factor", "init_weights"),
               peft_dropouts=("module_dropout",), peft_bias=True, size="block"),
    AdapterRow("ia3", "ia3", f"{_PEFT}:ia3_config", ("init_ia3_weights",), size="vector"),
    AdapterRow("locon", "locon", lycoris_conv=True),
    AdapterRow("glora", "glora"),
    AdapterRow("dylora", "dylora"),
    AdapterRow("full", "full", size="full"),
)}

ADAPTER_TYPES: tuple[str, ...] = tuple(ADAPTERS)


def default_backend(adapter_type: str, family_traits: frozenset[str] = frozenset()) -> str:
    """The backend `adapter.backend = auto` means for this type on a family with these traits."""
    row = ADAPTERS[adapter_type]
    if not row.peft_config:
        return "lycoris"
    if "kohya_keys" in family_traits and not row.peft_kohya:
        return "lycoris"  # PEFT's weights would leave the run without a ComfyUI file
    return "peft"


def resolved_backend(adapter_type: str, backend: str, family_traits: frozenset[str] = frozenset()) -> str:
    return default_backend(adapter_type, family_traits) if backend == "auto" else backend


def network_args_allowed(adapter_type: str, backend: str) -> tuple[str, ...]:
    return ADAPTERS[adapter_type].peft_args if backend == "peft" else LYCORIS_ARGS
