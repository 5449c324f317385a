"""GPU memory (VRAM) and step-time estimate of a job, before any model loads (issue #16 items 3-4).

A pure function of the config and the model's weight shapes. The shapes come from the model folder's
`config.json` files and safetensors headers (`model_shapes.read_model`: no weights are read, no torch is imported), or
from any other table of shapes (`model_from_shapes`: the tests and `bench --gpu` pass a model built on the
meta device). The estimate adds up, in bytes:

- weights: the frozen base by dtype (bf16/fp16 2 bytes, full precision 4; `model.quantization` 8bit /
  4bit quantizes the linear layers of any family to 1 / 0.5 byte + per-block scales);
- adapter: trainable numbers (by `adapter.type`, see the adapter registry's `size`) x (fp32 weight 4 +
  gradient 4 + the optimizer's state, see the optimizer catalogue's `state_bytes`) + an EMA copy kept on the
  GPU; a full fine-tune trains every weight of the trained network in fp32;
- activations: what autograd keeps for the backward pass, from the architecture in `config.json` (UNet:
  a walk over its levels; transformers: layers x tokens x hidden size) x batch x resolution, song length
  or sequence length; with gradient checkpointing only each block's input plus one block recomputed; a
  causal LM's logits and their fp32 loss copies;
- encoders: the VAE and text/condition encoders when they stay on the GPU (no cache, or ACE-Step without
  `memory.offload_encoder`);
- reserve: the CUDA context and the allocator's slack, which torch's own counters do not show.

The activation coefficients were fitted to four peaks measured with `bench --gpu` on an H200
(tests/config/test_vram.py cites them); the other families use the same formulas unverified. The step
time is rough: forward FLOPs from the weight shapes x tokens, x3 for the backward pass (+1 forward with
checkpointing), at an assumed model-FLOP utilisation of the GPU's dense bf16 peak.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from studio.config.model_shapes import ModelInfo, Part
from studio.config.optimizers import spec as optimizer_spec
from studio.registry.adapters import ADAPTERS
from studio.registry.families import row as family_row

GIB = 2**30
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, by device-name fragment.
PEAK_BF16_TFLOPS = [("H200", 989.5), ("H100 PCIe", 756.0), ("H100", 989.5), ("A100", 312.0), ("L40S", 362.1),
                    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("4090", 165.2), ("3090", 71.0)]
ASSUMED_MFU = 0.35  # share of the bf16 peak a training step reaches (rough: 0.25-0.5 on big models)
ASSUMED_TFLOPS = 100.0  # peak when the GPU is unknown
CONTEXT_BYTES = 0.6 * GIB  # CUDA context, cuBLAS/cuDNN workspaces
ALLOCATOR_SLACK = 0.05  # PyTorch's caching allocator reserves a little more than it hands out
# Fitted to `bench --gpu` on an H200 (see the module docstring): elements kept per element of the formulas.
K_TRANSFORMER = 1.17  # transformer layer activations (Llama-3.1-8B, no checkpointing)
K_UNET = 1.07  # UNet activations (SDXL, no checkpointing)
K_UNET_CHECKPOINTED = 1.43  # UNet activations with checkpointing (SDXL)
LOGIT_BYTES = 10  # per token x vocabulary entry: bf16 logits kept, fp32 log-softmax and gradient (fitted)
TEXT_TOKENS = 256  # text tokens beside the image tokens in a joint-attention transformer (SD3, Flux, Z-Image)
SONG_SECONDS = 60.0  # song length assumed when neither data.chunk_seconds nor data.max_duration bound it
QUANT_BYTES = {"none": None, "8bit": 1.0 + 4 / 64, "4bit": 0.5 + 4 / 64}  # + fp32 scale per 64-block (NF4/LLM.int8)


# ---- the estimate --------------------------------------------------------------------------------------
@dataclass
class VramEstimate:
    parts: dict[str, float]  # label -> bytes
    gradient_checkpointing: bool
    trainable: int
    tokens: int  # per step: latent pixels, frames or text tokens x batch
    step_seconds: float
    gpu_bytes: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def tensors(self) -> float:
        """What torch's allocator hands out at the peak (what `torch.cuda.max_memory_allocated` reports)."""
        return sum(v for k, v in self.parts.items() if k != "reserve")

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool | None:
        return None if not self.gpu_bytes else self.total <= self.gpu_bytes

    def lines(self) -> list[str]:
        card = f" of {gpu_text(self.gpu_bytes)}" if self.gpu_bytes else ""
        verdict = "" if self.fits is None else (" (fits)" if self.fits else " (does NOT fit)")
        out = [f"VRAM estimate: {self.total / GIB:.1f} GiB{card}{verdict}, gradient checkpointing "
               f"{'on' if self.gradient_checkpointing else 'off'}"]
        out += [f"  {label:<12} {size_text(value):>10}" for label, value in self.parts.items()]
        out.append(f"Time per optimizer step (rough, at {ASSUMED_MFU:.0%} of the GPU's bf16 peak): "
                   + (f"{self.step_seconds:.2f} s" if self.step_seconds >= 0.01 else "under 10 ms"))
        return out + [f"  note: {n}" for n in self.notes]

    def as_dict(self) -> dict:
        return {"total_gib": round(self.total / GIB, 2), "tensors_gib": round(self.tensors / GIB, 2),
                "parts_gib": {k: round(v / GIB, 3) for k, v in self.parts.items()},
                "gradient_checkpointing": self.gradient_checkpointing, "trainable_params": self.trainable,
                "step_seconds_rough": round(self.step_seconds, 3),
                "gpu_gib": round(self.gpu_bytes / GIB, 1) if self.gpu_bytes else None, "fits": self.fits,
                "notes": self.notes}


def size_text(value: float) -> str:
    return f"{value / GIB:.2f} GiB" if value >= GIB / 10 else f"{value / 2**20:.1f} MiB"


def gpu_text(value: float) -> str:
    """A GPU's memory: whole GiB for real cards, two digits for the small figures of tests."""
    return f"{value / GIB:.0f} GiB" if value >= 10 * GIB else f"{value / GIB:.3g} GiB"


def _matches(name: str, targets: list[str]) -> bool:
    """PEFT's rule for a list of target names: the module's name is one of them or ends in `.name`."""
    return any(name == t or name.endswith("." + t) for t in targets)


ATTENTION_NAMES = ("to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj", "v_proj", "o_proj")


def adapter_params(cfg, part: Part) -> int:
    """Trainable numbers the adapter adds to `part` (all its weights for a full fine-tune)."""
    size = ADAPTERS[cfg.adapter.type].size
    if size == "full":
        return part.params
    targets = list(cfg.adapter.target_modules) or list(cfg.adapter.self_target_modules) \
        + list(cfg.adapter.cross_target_modules) or list(ATTENTION_NAMES)
    r = cfg.adapter.rank
    total = 0
    for name, (out, inp) in part.linears().items():
        if _matches(name, targets):
            total += {"low_rank": r * (inp + out), "hadamard": 2 * r * (inp + out), "block": r * inp,
                      "vector": out}[size]
    return total


def _layer_elements(h: int, inter: int, kv: int) -> int:
    """Elements one transformer layer keeps per token for backward: norms (kept in fp32, so twice), the
    attention input, q/k/v, attention output and o input, the MLP input, gate/up outputs, activation, product."""
    return 4 * h + h + (h + 2 * kv) + 2 * h + h + 4 * inter


def _transformer_dims(config: dict) -> tuple[int, int, int, int]:
    """(layers, hidden, intermediate, kv width) from a transformers or diffusers transformer config."""
    layers = (config.get("num_hidden_layers") or (config.get("num_layers", 0) + config.get("num_single_layers", 0))
              or (config.get("n_layers", 0) + 2 * config.get("n_refiner_layers", 0)) or 1)
    heads = config.get("num_attention_heads") or config.get("n_heads") or 1
    hidden = (config.get("hidden_size") or config.get("dim") or config.get("n_embd")
              or heads * (config.get("attention_head_dim") or config.get("head_dim") or 64))
    inter = config.get("intermediate_size") or 4 * hidden
    head_dim = config.get("head_dim") or hidden // heads
    kv = (config.get("num_key_value_heads") or config.get("n_kv_heads") or heads) * head_dim
    return int(layers), int(hidden), int(inter), int(kv)


def _unet_levels(config: dict, latent_side: int):
    """Per UNet level: (channels, tokens per sample, resnets, transformer blocks), down + mid + up."""
    channels = config["block_out_channels"]
    per_block = config.get("layers_per_block", 2)
    tl = config.get("transformer_layers_per_block", 1)
    tl = tl if isinstance(tl, list) else [tl] * len(channels)
    attn = ["CrossAttn" in t for t in config["down_block_types"]]
    levels = []
    for i, c in enumerate(channels):
        tokens = (latent_side // 2**i) ** 2
        blocks = per_block * tl[i] if attn[i] else 0
        # down: per_block resnets; up: per_block + 1 resnets on concatenated (about 1.5x wider) inputs
        levels.append((c, tokens, per_block + 1.5 * (per_block + 1), blocks + (blocks // per_block) * (per_block + 1)))
    c, tokens = channels[-1], (latent_side // 2 ** (len(channels) - 1)) ** 2
    levels.append((c, tokens, 2, tl[-1]))  # the mid block
    return levels


RESNET_ELEMENTS = 8  # x channels per pixel: group norms (fp32 statistics), SiLUs, both convolutions' inputs
UNET_BLOCK_ELEMENTS = 30  # x channels per token: 3 norms, self- and cross-attention, GEGLU feed-forward


def _activations(cfg, model: ModelInfo, checkpointing: bool, act_bytes: int) -> tuple[float, int, list[str]]:
    """(bytes of activations at the peak, tokens per step, notes)."""
    config, data = model.trained.config, family_row(cfg.model.family).data
    batch = cfg.training.batch_size
    notes = []
    if "down_block_types" in config:  # a UNet
        side = image_resolution(cfg) // 8
        levels = _unet_levels(config, side)
        per_module = [tok * c * e for c, tok, resnets, blocks in levels
                      for e, n in ((RESNET_ELEMENTS, resnets), (UNET_BLOCK_ELEMENTS, blocks)) if n]
        full = sum(tok * c * (RESNET_ELEMENTS * resnets + UNET_BLOCK_ELEMENTS * blocks)
                   for c, tok, resnets, blocks in levels)
        if checkpointing:  # each module's input (and the skip connections) + one module recomputed
            kept = sum(tok * c * (resnets + blocks + 1) for c, tok, resnets, blocks in levels)
            elements = K_UNET_CHECKPOINTED * (kept + max(per_module))
        else:
            elements = K_UNET * full
        return elements * batch * act_bytes, side * side * batch, notes
    layers, hidden, inter, kv = _transformer_dims(config)
    if data == "text":
        tokens = cfg.data.max_seq_length
    elif data == "images":
        tokens = (image_resolution(cfg) // 16) ** 2 + TEXT_TOKENS
    else:
        seconds = cfg.data.chunk_seconds or cfg.data.max_duration or SONG_SECONDS
        if not (cfg.data.chunk_seconds or cfg.data.max_duration):
            notes.append(f"songs counted as {SONG_SECONDS:.0f} s long (set data.chunk_seconds to bound them)")
        vae = next((p.config for p in model.others if "downsampling_ratios" in p.config), {})
        rate = vae.get("sampling_rate", 48000) / math.prod(vae.get("downsampling_ratios", [1920]))
        tokens = int(seconds * rate) // int(config.get("patch_size", 1) or 1)
    tokens *= batch
    layer = _layer_elements(hidden, inter, kv) * K_TRANSFORMER
    elements = tokens * (layers * hidden + layer) if checkpointing else tokens * layers * layer
    total = elements * act_bytes
    vocab = config.get("vocab_size")
    if data == "text" and vocab:
        total += tokens * vocab * LOGIT_BYTES
    return total, tokens, notes


def image_resolution(cfg) -> int:
    return max([cfg.data.resolution, *(cfg.data.resolutions or [])])


def _forward_flops(model: ModelInfo, cfg, tokens: int) -> float:
    """Multiply-adds x 2 of one forward pass: every weight once per token (a UNet's per level)."""
    config = model.trained.config
    if "down_block_types" in config:
        side = image_resolution(cfg) // 8
        n = len(config["block_out_channels"])
        flops = 0.0
        for name, shape in model.trained.shapes.items():
            parts = name.split(".")
            level = (int(parts[1]) if parts[0] == "down_blocks" else n - 1 - int(parts[1]) if parts[0] == "up_blocks"
                     else n - 1 if parts[0] == "mid_block" else 0 if parts[0] in ("conv_in", "conv_out") else None)
            if level is not None and len(shape) >= 2:
                flops += 2 * math.prod(shape) * (side // 2**level) ** 2
        return flops * cfg.training.batch_size
    weights = sum(math.prod(s) for k, s in model.trained.shapes.items() if len(s) >= 2 and "embed" not in k)
    layers, hidden, _, _ = _transformer_dims(config)
    per_item = tokens // cfg.training.batch_size
    return 2 * weights * tokens + 4 * tokens * per_item * hidden * layers


def estimate_vram(cfg, model: ModelInfo, *, checkpointing: bool | None = None, gpu_bytes: float | None = None,
                  gpu_name: str = "") -> VramEstimate:
    """The estimate for `cfg` with its `memory.gradient_checkpointing` (`auto` decided for `gpu_bytes`), or
    `checkpointing` when given."""
    if checkpointing is None:
        checkpointing = (decide_checkpointing(cfg, model, gpu_bytes)[0] if cfg.memory.gradient_checkpointing == "auto"
                         else bool(cfg.memory.gradient_checkpointing))
    precision = cfg.memory.mixed_precision
    weight_bytes = 4 if precision == "no" else 2
    full = ADAPTERS[cfg.adapter.type].size == "full"
    trainable = adapter_params(cfg, model.trained)
    quant = QUANT_BYTES.get(getattr(cfg.model, "quantization", "none"))
    parts: dict[str, float] = {}
    if full:
        parts["weights"] = 0.0  # the trained weights are counted under "trainable" (fp32)
    elif quant:
        # bitsandbytes leaves the output head in full width (transformers keeps `lm_head` unquantized)
        linear = sum(o * i for name, (o, i) in model.trained.linears().items() if not name.endswith("lm_head"))
        parts["weights"] = linear * quant + (model.trained.params - linear) * weight_bytes
    else:
        parts["weights"] = model.trained.params * weight_bytes
    state = optimizer_spec(cfg.optimizer.name).state_bytes
    ema = 4 if cfg.training.use_ema and cfg.training.ema_device == "accelerator" else 0
    parts["trainable"] = trainable * (4 + 4 + state + ema)
    notes = []
    activations, tokens, act_notes = _activations(cfg, model, checkpointing, 4 if precision == "no" else 2)
    parts["activations"] = activations
    notes += act_notes
    encoders = [p for p in model.others if _encoder_resident(cfg, p)]
    parts["encoders"] = sum(p.params * (4 if precision == "no" or "vae" in p.name else 2) for p in encoders)
    if encoders:
        notes.append("on the GPU while training: " + ", ".join(p.name for p in encoders)
                     + (" (data.cache_mode=auto counts them there; once `studio preprocess` has made the cache "
                        "they stay in CPU memory)" if cfg.data.cache_mode == "auto"
                        and family_row(cfg.model.family).data == "images" else ""))
    parts["reserve"] = CONTEXT_BYTES + ALLOCATOR_SLACK * sum(parts.values())
    fwd = _forward_flops(model, cfg, tokens)
    flops = fwd * ((3 if full else 2.2) + (1 if checkpointing else 0))
    peak = next((v for frag, v in PEAK_BF16_TFLOPS if frag in gpu_name), ASSUMED_TFLOPS)
    seconds = flops * cfg.training.gradient_accumulation_steps / (peak * 1e12 * ASSUMED_MFU)
    return VramEstimate(parts, checkpointing, trainable, tokens, seconds, gpu_bytes, notes)


def _encoder_resident(cfg, part: Part) -> bool:
    """Whether a frozen VAE / text / condition encoder stays on the GPU during training."""
    data = family_row(cfg.model.family).data
    if data == "songs":
        return not cfg.memory.offload_encoder
    if data == "images":
        if cfg.adapter.train_text_encoder and part.name.startswith("text_encoder"):
            return True
        return cfg.data.cache_mode != "on"  # `auto` uses a cache only once `studio preprocess` made one
    return False


def decide_checkpointing(cfg, model: ModelInfo | None, gpu_bytes: float | None) -> tuple[bool, str]:
    """`memory.gradient_checkpointing` as the job will run it, and why. `auto`: on only when the run does
    not fit `gpu_bytes` without it; with no GPU size known, on (the memory-safe choice). `model` is read
    only for `auto`."""
    choice = cfg.memory.gradient_checkpointing
    if choice is not True and choice is not False and choice != "auto":
        raise ValueError(f"memory.gradient_checkpointing: {choice!r}; allowed: auto, true, false")
    if choice != "auto":
        return bool(choice), f"gradient checkpointing {'on' if choice else 'off'} (set in the config)"
    if not gpu_bytes:
        return True, "gradient checkpointing on (auto: no GPU memory size known, so the memory-safe choice)"
    without = estimate_vram(cfg, model, checkpointing=False, gpu_bytes=gpu_bytes)
    if without.fits:
        return False, (f"gradient checkpointing off (auto: the run needs about {without.total / GIB:.1f} GiB "
                       f"without it, the GPU has {gpu_text(gpu_bytes)})")
    return True, (f"gradient checkpointing on (auto: about {without.total / GIB:.1f} GiB without it would not "
                  f"fit the GPU's {gpu_text(gpu_bytes)})")
