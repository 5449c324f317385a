"""The frozen base in fewer bits: `model.quantization` (8bit / 4bit), `model.quantization_backend`
(bitsandbytes / torchao), `model.fp8_base` (torchao float8 weights) and `model.quantize_via` (where the
weights are quantized). Each library quantizes while `from_pretrained` loads; this module only builds the
quantization config it takes, once for transformers (causal LM) and diffusers (UNet / DiT transformer).

The adapter trains on top in its own precision: PEFT wraps bitsandbytes' `Linear4bit` / `Linear8bitLt` and
torchao's int8 / float8 weight tensors with its LoRA layers (`peft.tuners.lora.bnb`, `.torchao`).
"""
from __future__ import annotations

import torch


def quantized(cfg) -> bool:
    """Is the trained network's frozen base loaded in fewer bits?"""
    return cfg.model.quantization != "none" or cfg.model.fp8_base


def bnb_options(choice: str, dtype: torch.dtype) -> dict:
    """Keyword arguments of `BitsAndBytesConfig` (the same names in transformers and diffusers): LLM.int8
    for 8bit; NF4 with double quantization for 4bit (QLoRA, arXiv 2305.14314), computing in the run's
    half precision (fp32 on the CPU)."""
    if choice == "8bit":
        return {"load_in_8bit": True}
    compute = dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32
    return {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": compute}


def diffusers_load_options(cfg, device: torch.device, dtype: torch.dtype) -> dict:
    """Extra `from_pretrained` keyword arguments of the trained diffusers network ({} = full weights
    through system RAM)."""
    if not quantized(cfg):  # memory.lowram: straight to the device, not through system RAM
        return {"device_map": {"": str(device)}} if cfg.memory.lowram else {}
    from studio.runfolder.device import device_problems

    problems = device_problems(cfg, device.type)
    if problems:
        raise ValueError("; ".join(f"{field}: {msg}" for field, msg in problems))
    if cfg.model.quantization_backend == "bitsandbytes" and not cfg.model.fp8_base:
        from diffusers import BitsAndBytesConfig

        # diffusers' bitsandbytes quantizer puts the weights on the GPU and quantizes them as they load.
        return {"quantization_config": BitsAndBytesConfig(**bnb_options(cfg.model.quantization, dtype))}
    from diffusers import TorchAoConfig
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    quant = Float8WeightOnlyConfig() if cfg.model.fp8_base else Int8WeightOnlyConfig()
    options = {"quantization_config": TorchAoConfig(quant)}
    if cfg.model.quantize_via == "accelerator":  # quantize on the device as the weights arrive there
        options["device_map"] = {"": str(device)}
    return options  # else: quantized in CPU memory, then moved to the device whole


def place_network(net: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move a loaded diffusers network to the device in the run's dtype. A quantized one keeps its dtypes
    (diffusers refuses to cast it); a bitsandbytes one is already on the GPU (and refuses `to`)."""
    if not getattr(net, "is_quantized", False):
        net.to(device, dtype=dtype)
    elif getattr(net, "quantization_method", None) != "bitsandbytes":
        net.to(device)
