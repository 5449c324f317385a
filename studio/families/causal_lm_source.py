"""Where a causal LM comes from: which folders/files can be trained (`check_model_source`) and how the
frozen base is quantized (`quantization_config`). Shared by the family and its export checks."""
from __future__ import annotations

from pathlib import Path

import torch

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class ModelSourceError(ValueError):
    """`model.path` / `model.tokenizer_path` does not point at a trainable Hugging Face model."""


def check_model_source(path: str) -> None:
    """Reject what `from_pretrained` cannot train, with the reason (FIELDS §2 M02). Hub ids pass here;
    they are loaded with `use_safetensors=True`, which refuses pickle-only repos."""
    local = Path(path)
    if not local.exists():
        return
    if local.is_file():
        if local.suffix.lower() == ".gguf":
            raise ModelSourceError(f"model.path: {local.name} is a GGUF file, an inference-only format (llama.cpp) "
                                   "that cannot be trained; point to the original Hugging Face model folder "
                                   "(config.json + .safetensors weights)")
        raise ModelSourceError(f"model.path: causal_lm needs a Hugging Face model folder (config.json + "
                               f".safetensors weights) or a hub id, not the single file {local.name}")
    names = sorted(p.name for p in local.iterdir() if p.is_file())
    if "config.json" not in names:
        ggufs = [n for n in names if n.lower().endswith(".gguf")]
        if ggufs:
            raise ModelSourceError(f"model.path: {local} holds GGUF file(s) ({', '.join(ggufs[:3])}), an "
                                   "inference-only format that cannot be trained; use the original Hugging Face "
                                   "model folder (config.json + .safetensors weights)")
        raise ModelSourceError(f"model.path: {local} has no config.json, so it is not a Hugging Face "
                               "transformers model folder")
    if not any(n.endswith(".safetensors") for n in names):
        pickles = [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise ModelSourceError(f"model.path: {local} only has pickle weights ({', '.join(pickles[:3])}); the "
                                   "studio loads .safetensors only, since pickles can run code when loaded. "
                                   "Convert once: AutoModelForCausalLM.from_pretrained(folder)"
                                   ".save_pretrained(new_folder)")
        raise ModelSourceError(f"model.path: {local} has no .safetensors weights")


def quantization_config(cfg, device: torch.device, dtype: torch.dtype):
    """transformers' bitsandbytes config for `model.quantization` (the options: `families.quantize`)."""
    from studio.families.quantize import bnb_options
    from studio.runfolder.device import device_problems

    choice = cfg.model.quantization
    if choice == "none":
        return None
    problems = device_problems(cfg, "cuda" if torch.cuda.is_available() and device.type == "cuda" else device.type)
    if problems:
        raise ValueError("; ".join(f"{field}: {msg}" for field, msg in problems))
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError(f"model.quantization: '{choice}' needs the bitsandbytes package "
                         "(pip install bitsandbytes)") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(**bnb_options(choice, dtype))
