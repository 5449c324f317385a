"""Cross-field rules of the causal LM family (FIELDS §1 J05, §3.1, §4 A08). The LLM settings themselves
live in the ordinary sections (`data.max_seq_length`, `model.quantization`, ...) with
`families=("causal_lm",)`; this module only checks how they fit together."""
from __future__ import annotations

from pathlib import PurePath

LLM_VARIANTS = ("sft", "pretrain")
# FIELDS §4 A08: attention projections plus the Llama-style MLP, embedding and output head.
LLM_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                      "embed_tokens", "lm_head")
DATA_SUFFIXES = {"sft": (".jsonl",), "pretrain": (".txt", ".jsonl")}


def llm_problems(cfg) -> list[tuple[str, str]]:
    """Problems (field path, message) of a causal LM config; fills `model.variant` when empty."""
    if cfg.model.family != "causal_lm":
        return []
    problems: list[tuple[str, str]] = []
    if not cfg.model.variant:
        cfg.model.variant = "sft"
    if cfg.model.variant not in LLM_VARIANTS:
        problems.append(("model.variant", f"causal_lm trains as 'sft' (chat JSONL) or 'pretrain' (plain "
                         f"text); got {cfg.model.variant!r}"))
        return problems
    allowed = DATA_SUFFIXES[cfg.model.variant]
    for key in ("path", "eval_path"):
        suffix = PurePath(getattr(cfg.data, key)).suffix.lower()
        if suffix and suffix not in allowed:
            problems.append((f"data.{key}", f"model.variant '{cfg.model.variant}' reads {' or '.join(allowed)} "
                             f"files (or a folder of them for pretraining); got a '{suffix}' file"))
    unusual = [name for name in cfg.adapter.target_modules if name not in LLM_TARGET_MODULES]
    if unusual:
        cfg.notes.append(f"adapter.target_modules {unusual} are not among the usual causal LM layers "
                         f"({', '.join(LLM_TARGET_MODULES)}); they are used as given.")
    return problems
