"""`adapter` section (FIELDS §4): the method, its backend, its size and where it goes.

Each type's rules (which backend has it, the options and `network_args` keys each backend accepts) are
its row of the adapter registry, studio/registry/adapters.py; this module checks a config against them.
"""
from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from studio.config.fields import Section, setting
from studio.registry.adapters import ADAPTER_TYPES, ADAPTERS, network_args_allowed, resolved_backend
from studio.registry.families import FAMILIES, family_ids

TEXT_ENCODER_FAMILIES = family_ids(trait="text_encoder_lora")
ATTENTION_SPLIT_FAMILIES = family_ids(trait="attention_split")
LLM_ADAPTER_FAMILIES = family_ids(trait="llm_adapter")
KOHYA_FAMILIES = family_ids(trait="kohya_keys")

AdapterType = Literal[ADAPTER_TYPES]  # the adapter registry's types (studio/registry/adapters.py)

# Keys that duplicate a field: named so the error can point at the field instead.
ARG_FIELDS = {"r": "rank", "linear_dim": "rank", "network_dim": "rank", "lora_alpha": "alpha",
              "linear_alpha": "alpha", "network_alpha": "alpha", "alpha": "alpha", "lora_dropout": "dropout",
              "dropout": "dropout", "rank_dropout": "rank_dropout", "module_dropout": "module_dropout",
              "conv_dim": "conv_rank", "conv_alpha": "conv_alpha", "factor": "lokr_factor",
              "decompose_factor": "lokr_factor", "decompose_both": "lokr_decompose_both", "algo": "type",
              "target_modules": "target_modules", "bias": "bias", "preset": "target_modules",
              "oft_block_size": "rank", "boft_block_size": "rank"}


class AdapterSection(Section):
    type: AdapterType = setting(
        "lora", "Adapter method. lora: small low-rank update, loads everywhere (default). dora: LoRA with a "
        "separate magnitude, often closer to full fine-tuning. loha / lokr: Hadamard / Kronecker "
        "factorisations, more expressive per parameter. oft / boft: orthogonal rotations of the weights "
        "(oft = diagonal-block OFT with LyCORIS). ia3: learned scaling vectors, tiny files. locon: LoRA "
        "that also adapts convolutions. glora: generalised LoRA. dylora: LoRA trained at every rank up "
        "to `rank`. full: trains the chosen layers' whole weights (big files).")
    peft_config_path: str = setting(
        "", "A PEFT adapter config (adapter_config.json, or the folder holding it) whose method, rank, alpha, "
        "dropout, target layers and other options replace the fields of this section. Its values are "
        "checked like the form's and recorded in training_args.json; options the studio cannot apply "
        "are refused by name. Empty = use this section.", group="advanced", widget="path")
    backend: Literal["auto", "peft", "lycoris"] = setting(
        "auto", "Library that implements the method. `auto`: the one whose files your tools load: PEFT for "
        "lora, dora, loha and lokr (files load in diffusers/PEFT directly, and convert to the ComfyUI file), "
        "and for oft, boft and ia3 on the other families; LyCORIS for oft, boft "
        "and ia3 on SD (its file is the one ComfyUI/A1111 read) and for locon, glora, dylora and full (PEFT "
        "does not have them). `lycoris` forces LyCORIS' own variants (e.g. Diag-OFT, conv layers for "
        "LoHa/LoKr, DoRA-style LoKr).", group="advanced")
    rank: int = setting(16, "Adapter capacity (LoRA `r`, network dim). Higher learns more detail but gives "
                        "bigger files and more memory; 8-32 suits a character or a style. For oft and boft "
                        "it is the size of the rotation blocks (must divide the layer width).", ge=1, le=1024)
    alpha: float = setting(16, "Scale of the update: the effective strength is alpha / rank, so alpha = rank "
                           "gives 1 and alpha = rank / 2 gives 0.5. Not used by oft, boft and ia3. Studio "
                           "defaults: alpha = rank (16) for image and LLM, 2 x rank (128) for music as "
                           "Side-Step sets it. The kohya notebook's image alpha 8 (rank / 2) halves each "
                           "update and is paired there with a 5x higher learning rate; alpha = rank keeps "
                           "the learning rate meaning the same whatever the rank.", gt=0, le=4096)
    dropout: float = setting(0.0, "Share of the adapter's inputs zeroed at random while training, to curb "
                             "memorising a small dataset. 0 = off.", ge=0.0, lt=1.0, step=0.01)
    rank_dropout: float = setting(0.0, "Share of the rank dimensions dropped at random each step (LoHa, "
                                  "LoKr and LyCORIS methods). 0 = off.", ge=0.0, lt=1.0, step=0.01,
                                  group="advanced", adapters=("loha", "lokr", "locon", "glora", "dylora"))
    module_dropout: float = setting(0.0, "Chance of skipping a whole adapted layer for a step (LoHa, LoKr, "
                                    "OFT, BOFT and LyCORIS methods). 0 = off.", ge=0.0, lt=1.0, step=0.01,
                                    group="advanced")
    attention_type: Literal["both", "self", "cross"] = setting(
        "both", "Which attention layers get the adapter. `self`: attention inside the image/music stream "
        "(style, texture, rhythm), about half the size; `cross`: attention to the prompt (prompt "
        "following); `both`: all, best quality. Layers that are not attention (convolutions, MLPs) "
        "listed in the targets are always kept.", families=ATTENTION_SPLIT_FAMILIES)
    target_modules: list[str] = setting(
        None, "Layer names to adapt, matched at the end of each module path (e.g. `to_q to_k to_v "
        "to_out.0`). Empty = the family's attention projections. A space- or comma-separated string "
        "is accepted.", default_factory=list, group="advanced")
    self_target_modules: list[str] = setting(
        None, "Separate layer names for self-attention (only with attention type `both`). Empty = "
        "`target_modules`.", default_factory=list, group="advanced", families=ATTENTION_SPLIT_FAMILIES)
    cross_target_modules: list[str] = setting(
        None, "Separate layer names for cross-attention (only with attention type `both`). Empty = "
        "`target_modules`.", default_factory=list, group="advanced", families=ATTENTION_SPLIT_FAMILIES)
    bias: Literal["none", "lora_only", "all"] = setting(
        "none", "Train bias terms too: `none` (recommended), `lora_only` (biases of the adapted layers) or "
        "`all` (every bias of the network). PEFT lora/dora/oft/boft only; kohya files cannot carry them.",
        group="advanced")
    conv_rank: int = setting(0, "Rank for 3x3 convolutions (LoCon; also LoHa/LoKr with the LyCORIS "
                             "backend). 0 = leave convolutions alone.", ge=0, le=1024, group="advanced",
                             adapters=("locon", "loha", "lokr"))
    conv_alpha: float = setting(1.0, "Alpha for the convolution layers (strength = conv_alpha / conv_rank).",
                                gt=0, le=4096, group="advanced", adapters=("locon", "loha", "lokr"))
    lokr_factor: int = setting(-1, "LoKr: split each weight into Kronecker factors of about this size. -1 = "
                               "automatic (as balanced as possible).", ge=-1, le=8192, group="advanced",
                               adapters=("lokr",))
    lokr_decompose_both: bool = setting(False, "LoKr: also factor the smaller Kronecker matrix into two "
                                        "low-rank ones (fewer parameters).", group="advanced",
                                        adapters=("lokr",))
    lokr_use_tucker: bool = setting(False, "LoKr: Tucker decomposition of convolution kernels (smaller conv "
                                    "adapters).", group="advanced", adapters=("lokr",))
    lokr_use_scalar: bool = setting(False, "LoKr (LyCORIS): learn an extra scalar per layer, so the update "
                                    "can start non-zero.", group="advanced", adapters=("lokr",))
    lokr_weight_decompose: bool = setting(False, "LoKr (LyCORIS): DoRA-style magnitude/direction split of "
                                          "the updated weight.", group="advanced", adapters=("lokr",))
    network_args: str = setting(
        "", "Extra method options as `key=value` pairs separated by spaces or commas, e.g. `use_rslora=true` "
        "(PEFT LoRA) or `constraint=0.0001 rescaled=true` (LyCORIS OFT). Numbers, true/false and plain "
        "words only; the keys each method accepts are listed in the error for a wrong one.",
        group="advanced")
    init_from: str = setting("", "Start from an existing adapter (a run folder, or its "
                             "adapter_model.safetensors) instead of a fresh one, to keep refining it. It must "
                             "have the same type, rank and layers.", group="advanced", widget="path")
    train_text_encoder: bool = setting(False, "Also put the adapter on the text encoder(s). Can sharpen a "
                                       "concept's trigger word but overfits easily; the text embeddings are "
                                       "then computed every step (never cached).", group="advanced",
                                       families=TEXT_ENCODER_FAMILIES)
    text_encoder_lr: float = setting(1e-4, "Learning rate of the text-encoder adapter; usually 5-10x below "
                                     "the main learning rate because the text encoder is fragile.", gt=0.0,
                                     le=10.0, group="advanced", families=TEXT_ENCODER_FAMILIES)
    freeze_llm_adapter: bool = setting(
        True, "Keep the LLM adapter as it is: the small pretrained network between the Qwen3 text encoder and "
        "the image model that turns the encoder's output into what the image model reads. Off: the adapter "
        "method (or, with type full, the whole-weight training) also goes into its layers and it trains with "
        "the image model. On is the usual choice: it is already trained, and retraining it on a small dataset "
        "can make the model follow prompts worse (and on several GPUs its unused paths break DDP).",
        group="advanced", families=LLM_ADAPTER_FAMILIES)
    dora_as_lora_rank: int = setting(
        0, "DoRA runs: also write `<name>_dora_as_lora_kohya.safetensors`, each layer's DoRA change re-expressed "
        "as a plain LoRA of this rank. ComfyUI and A1111 apply DoRA files differently from PEFT, which trained "
        "it (a layer can differ by up to ~28 %), but apply a plain LoRA exactly as written: this file gives the "
        "trained result there, up to the error the export record reports (per layer, max and mean). A rank as "
        "large as the layers is exact, at a larger file; 2-4x the training rank is a usual compromise. "
        "0 = not written.", ge=0, le=4096, group="advanced", adapters=("dora",), families=KOHYA_FAMILIES)
    merge_after_training: bool = setting(False, "After training, also write `merged/`: the full model with "
                                         "the adapter folded into its weights (no adapter needed to use it, "
                                         "but the size of the whole model).", group="advanced")
    verify_exports: bool = setting(True, "Load every written adapter file back through its target loader "
                                   "(diffusers, PEFT, LyCORIS) and compare its output with the trained model; "
                                   "a mismatch fails the run. Loads a second copy of the base network.",
                                   group="advanced")

    @field_validator("target_modules", "self_target_modules", "cross_target_modules", mode="before")
    @classmethod
    def _split_string(cls, value):
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value

    def backend_for(self, family: str) -> str:
        """The backend that runs this adapter on `family` (`auto` resolved by the adapter registry)."""
        return resolved_backend(self.type, self.backend, FAMILIES[family].traits if family in FAMILIES else frozenset())

    def problems(self, cfg) -> list[tuple[str, str]]:
        backend, kind = self.backend_for(cfg.model.family), self.type
        out: list[tuple[str, str]] = []
        if backend not in ADAPTERS[kind].backends:
            out.append(("adapter.backend", f"PEFT has no '{kind}'; use backend 'lycoris' or 'auto'"))
        out += self._dropout_problems(backend)
        out += self._option_problems(backend, cfg)
        out += _network_args_problems(self.network_args, kind, backend)
        return out

    def _dropout_problems(self, backend: str) -> list[tuple[str, str]]:
        out, kind = [], self.type
        if backend == "peft":
            has = ADAPTERS[kind].peft_dropouts
            if self.dropout > 0 and "dropout" not in has:
                out.append(("adapter.dropout", f"PEFT's {kind} has no input dropout; use rank_dropout / "
                            "module_dropout, or backend 'lycoris'"))
            if self.rank_dropout > 0 and "rank_dropout" not in has:
                out.append(("adapter.rank_dropout", f"PEFT's {kind} has no rank dropout (loha and lokr do)"))
            if self.module_dropout > 0 and "module_dropout" not in has:
                out.append(("adapter.module_dropout", f"PEFT's {kind} has no module dropout (loha, lokr, oft "
                            "and boft do)"))
        return out

    def _option_problems(self, backend: str, cfg) -> list[tuple[str, str]]:
        out, kind = [], self.type
        if self.attention_type != "both" and (self.self_target_modules or self.cross_target_modules):
            out.append(("adapter.self_target_modules", "separate self/cross targets need attention_type "
                        f"'both' (got '{self.attention_type}')"))
        if self.bias != "none" and (backend != "peft" or not ADAPTERS[kind].peft_bias):
            out.append(("adapter.bias", f"'{self.bias}' needs backend peft with type lora, dora, oft or boft "
                        f"(got {kind} on {backend})"))
        if self.conv_rank > 0 and not (backend == "lycoris" and ADAPTERS[kind].lycoris_conv):
            out.append(("adapter.conv_rank", "convolution layers need type locon, or loha/lokr with backend "
                        f"'lycoris' (got {kind} on {backend})"))
        lokr_set = [name for name in ("lokr_decompose_both", "lokr_use_tucker", "lokr_use_scalar",
                                      "lokr_weight_decompose") if getattr(self, name)]
        if self.lokr_factor != -1:
            lokr_set.append("lokr_factor")
        if lokr_set and kind != "lokr":
            out.append((f"adapter.{lokr_set[0]}", f"only applies to type 'lokr' (got '{kind}')"))
        for name in ("lokr_use_scalar", "lokr_weight_decompose"):
            if kind == "lokr" and getattr(self, name) and backend != "lycoris":
                out.append((f"adapter.{name}", "needs backend 'lycoris' (PEFT's LoKr has no such option)"))
        family = cfg.model.family
        if self.train_text_encoder and family not in TEXT_ENCODER_FAMILIES:
            out.append(("adapter.train_text_encoder", f"only for {' / '.join(TEXT_ENCODER_FAMILIES)} "
                        f"(model.family is '{family}')"))
        if not self.freeze_llm_adapter and family not in LLM_ADAPTER_FAMILIES:
            out.append(("adapter.freeze_llm_adapter", f"only {' / '.join(LLM_ADAPTER_FAMILIES)} has an LLM adapter "
                        f"to train (model.family is '{family}'); leave it on"))
        if self.dora_as_lora_rank and (kind != "dora" or family not in KOHYA_FAMILIES):
            out.append(("adapter.dora_as_lora_rank", f"re-expresses a DoRA adapter in the kohya/ComfyUI file of "
                        f"{' / '.join(KOHYA_FAMILIES)} (got type '{kind}' on '{family}'); leave it at 0"))
        if self.train_text_encoder and kind == "full":
            out.append(("adapter.train_text_encoder", "not with type 'full'; use a low-rank method"))
        if self.attention_type != "both" and family not in ATTENTION_SPLIT_FAMILIES:
            out.append(("adapter.attention_type", f"'{family}' has no self/cross split; use 'both'"))
        return out


def _network_args_problems(text: str, kind: str, backend: str) -> list[tuple[str, str]]:
    from studio.config.kv import parse_key_values

    try:
        args = parse_key_values(text)
    except ValueError as err:
        return [("adapter.network_args", str(err))]
    allowed = network_args_allowed(kind, backend)
    out = []
    for key in args:
        if key in ARG_FIELDS:
            out.append(("adapter.network_args", f"'{key}' has its own setting: use adapter.{ARG_FIELDS[key]}"))
        elif key not in allowed:
            out.append(("adapter.network_args", f"unknown key '{key}' for {kind} on {backend}; allowed: "
                        + (", ".join(allowed) or "none")))
    return out
