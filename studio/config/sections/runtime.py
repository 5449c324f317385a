"""`memory` and `dataloader` sections (FIELDS §8, §9)."""
from __future__ import annotations

from typing import Literal

from studio.config.fields import IMAGE_FAMILIES, Section, setting
from studio.registry.families import family_ids

# The DiT families (no UNet): blocks in stacks that group offloading can park in system RAM.
FLOW_FAMILIES = tuple(f for f in IMAGE_FAMILIES if f not in family_ids(trait="unet"))


class MemorySection(Section):
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = setting(
        "auto", "Precision of the frozen model and the forward pass. `auto`: bf16 on GPUs that support it, "
        "else fp16 on CUDA, full precision on CPU. Trainable weights always stay in fp32.")
    gradient_checkpointing: Literal["auto"] | bool = setting(
        "auto", "Recompute activations during the backward pass instead of storing them: 40-60 % less memory, "
        "10-30 % slower, same result. `auto`: on only when the memory estimate says the run would not fit the "
        "GPU without it (on when the GPU's size is unknown); the choice is printed and recorded in "
        "training_args.json.")
    gpu_memory_gb: float = setting(
        0.0, "Memory of the GPU this job is planned for, in GB (GiB), e.g. 24 for a 24 GB card. The memory "
        "estimate, `auto` checkpointing and the fit check before launch use it. 0 = the GPU the job finds "
        "when it starts.", ge=0, le=4096, group="advanced")
    vram_check: Literal["refuse", "warn", "off"] = setting(
        "refuse", "What happens before launch when the memory estimate exceeds the GPU: `refuse` stops a run "
        "estimated at more than 125 % of the GPU's memory (and warns above 100 %), naming settings that "
        "would make it fit; `warn` only warns; `off` skips the check. The estimate is about +-15 %.",
        group="advanced")
    tf32: bool = setting(False, "Allow TensorFloat-32 matrix maths on NVIDIA Ampere or newer: faster, "
                         "slightly less exact.", group="advanced")
    torch_compile: bool = setting(False, "Compile the model with torch.compile: the first steps are slow, "
                                  "later ones faster. Mostly worth it on long GPU runs.", group="advanced")
    compile_scope: Literal["model", "blocks"] = setting(
        "model", "What torch.compile compiles (with torch compile on). `model`: the whole network in one "
        "graph. `blocks`: each repeated block (transformer layers, UNet attention blocks) on its own, as "
        "diffusers' regional compilation does: the same speed-up in most models, compiled many times faster.",
        group="advanced")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = setting(
        "default", "torch.compile's mode. `max-autotune` tries more GPU kernels while compiling (much longer "
        "start, sometimes faster steps); `reduce-overhead` replays CUDA graphs (needs fixed shapes).",
        group="advanced")
    compile_backend: Literal["inductor", "aot_eager", "eager", "cudagraphs"] = setting(
        "inductor", "torch.compile's backend. `inductor` generates fused kernels (the fast one); `eager` and "
        "`aot_eager` only trace, to find out whether a problem comes from compiling; `cudagraphs` needs CUDA.",
        group="advanced")
    channels_last: bool = setting(False, "Store the UNet's convolution weights channels-last (NHWC), the "
                                  "layout NVIDIA's tensor-core convolutions prefer. Same result; the speed "
                                  "gain depends on the GPU.", group="advanced", families=("sd15", "sdxl"))
    attention_backend: Literal["auto", "math", "flash", "efficient", "cudnn", "flash_attn"] = setting(
        "auto", "Attention kernel for training and evaluation steps. `auto`: PyTorch picks the fastest "
        "that fits. `math`, `flash`, `efficient`, `cudnn`: force one of PyTorch's own kernels (`efficient` "
        "and `cudnn` need CUDA; a kernel that cannot take the inputs stops the step with PyTorch's "
        "reason). `flash_attn`: the separately installed flash-attn package (CUDA only; causal LMs and the "
        "flow-matching transformers).", group="advanced")
    liger_kernels: bool = setting(False, "Patch the language model with Liger's fused Triton kernels (RMSNorm, "
                                  "RoPE, SwiGLU and a cross-entropy that never builds the full logits): less "
                                  "memory and faster steps on NVIDIA GPUs. Needs CUDA and `pip install "
                                  "liger-kernel` (not in the lock: it brings Triton).", group="advanced",
                                  families=("causal_lm",))
    offload_encoder: bool = setting(False, "Keep the VAE and text/condition encoders in system RAM while "
                                    "training (training reads preprocessed tensors); they visit the GPU "
                                    "only for samples. Frees a few GB of VRAM at no cost in quality.",
                                    families=("acestep",))
    no_half_vae: bool = setting(False, "Keep the VAE in full precision (fp32) while the rest runs in fp16 / bf16: "
                                "cures black or speckled images and NaN latents from VAEs that overflow in half "
                                "precision, for a little more memory. The SDXL, SD3, Flux and Z-Image VAEs always "
                                "run in fp32 here.", group="advanced", families=family_ids(trait="unet"))
    gradient_checkpointing_interval: int = setting(
        1, "With gradient checkpointing: recompute only every Nth block of each stack (1 = every block, 2 = every "
        "other one). Higher is faster and needs more memory, a middle ground between checkpointing everything "
        "and nothing. Same result.", ge=1, le=64, group="advanced", families=IMAGE_FAMILIES)
    activation_offload: bool = setting(
        False, "Move the activations kept for the backward pass to system RAM during the forward pass and "
        "bring them back when needed (torch's save_on_cpu): less VRAM, slower steps, same result. Needs "
        "gradient checkpointing (then only block inputs are kept, so the transfers stay small).",
        group="advanced")
    offload_during_startup: bool = setting(
        False, "While the latent / text cache is built, run the text encoders from system RAM on the CPU "
        "instead of moving them to the GPU beside the model: the start takes longer (much longer with big "
        "encoders such as T5-XXL and many captions), training is unchanged. For cards that cannot hold the "
        "text encoders and the model at once.", group="advanced", families=IMAGE_FAMILIES)
    blocks_to_swap: int = setting(
        0, "Keep the frozen weights of this many transformer blocks (the last ones) in system RAM and bring "
        "each layer to the GPU only while it runs (diffusers' group offloading). Saves about the blocks' "
        "share of the model's VRAM, costs a host-to-GPU copy of those weights twice a step. Needs gradient "
        "checkpointing. 0 = off.", ge=0, le=256, group="advanced", families=FLOW_FAMILIES)
    lowram: bool = setting(
        False, "Load the trained network's weights straight onto the GPU instead of through system RAM "
        "(from_pretrained with a device map), for machines with more VRAM than RAM. Same weights.",
        group="advanced", families=IMAGE_FAMILIES)

    def problems(self, cfg) -> list[tuple[str, str]]:
        out = []
        for field, on in (("memory.activation_offload", self.activation_offload),
                          ("memory.blocks_to_swap", self.blocks_to_swap > 0)):
            if on and not self.gradient_checkpointing:
                out.append((field, "needs memory.gradient_checkpointing (then only block inputs are kept for "
                            "backward and each block is recomputed with its weights brought back); turn it on"))
        if self.blocks_to_swap and cfg.model.quantization != "none" and cfg.model.quantization_backend == "bitsandbytes":
            out.append(("memory.blocks_to_swap", "bitsandbytes' quantized weights carry state that group "
                        "offloading does not move; use model.quantization_backend 'torchao' or no swapping"))
        return out


CUDA_ONLY_ATTENTION = ("efficient", "cudnn", "flash_attn")


def engine_problems(cfg, cuda: bool) -> list[tuple[str, str]]:
    """(field, message) for every chosen engine that cannot run here; `cuda`: the job will run on CUDA."""
    import importlib.util

    import torch

    mem, problems = cfg.memory, []
    where = "this machine has no CUDA GPU" if not torch.cuda.is_available() else "model.device keeps the job off CUDA"
    if mem.attention_backend in CUDA_ONLY_ATTENTION and not cuda:
        problems.append(("memory.attention_backend", f"'{mem.attention_backend}' runs only on CUDA and {where}; "
                         "choose 'auto', 'math' or 'flash'"))
    elif mem.attention_backend == "flash_attn" and importlib.util.find_spec("flash_attn") is None:
        problems.append(("memory.attention_backend", "'flash_attn' needs the flash-attn package (`pip install "
                         "flash-attn --no-build-isolation`, built for this torch and CUDA); or choose 'flash', "
                         "PyTorch's own FlashAttention kernel"))
    if mem.torch_compile and (mem.compile_backend == "cudagraphs" or mem.compile_mode == "reduce-overhead") and not cuda:
        problems.append(("memory.compile_backend" if mem.compile_backend == "cudagraphs" else "memory.compile_mode",
                         f"CUDA graphs need CUDA and {where}; use the inductor backend in the default mode"))
    if mem.liger_kernels:
        if not cuda:
            problems.append(("memory.liger_kernels", f"Liger's kernels are written in Triton for GPUs and {where}; "
                             "turn it off on this machine"))
        elif importlib.util.find_spec("liger_kernel") is None:
            problems.append(("memory.liger_kernels", "the liger-kernel package is not installed: `pip install "
                             "liger-kernel` (it brings Triton; not part of the lock)"))
    return problems


class DataloaderSection(Section):
    num_workers: int | None = setting(None, "Background processes that load data. Empty = automatic "
                                      "(4 on Linux/macOS, 0 on Windows, never more than the CPU cores). "
                                      "0 = load in the training process.", ge=0, le=64, group="advanced")
    prefetch_factor: int | None = setting(None, "Batches each worker prepares ahead (only with workers). "
                                          "Empty = 2.", ge=1, le=64, group="advanced")
    pin_memory: bool | None = setting(None, "Page-locked host memory for faster copies to a CUDA GPU. "
                                      "Empty = on with CUDA, off otherwise (it does nothing on CPU).",
                                      group="advanced")
    persistent_workers: bool | None = setting(None, "Keep worker processes alive between epochs. Empty = "
                                              "on whenever workers are used (except Windows).",
                                              group="advanced")
    prefetch_batches: bool = setting(False, "Collate the next batches in a background thread while the "
                                     "current step trains, so slow disks or slow collation do not stall "
                                     "the GPU. Same batches in the same order. Worth it on fast GPUs with "
                                     "small images; off by default because workers already read ahead.",
                                     group="advanced")
    prefetch_queue: int = setting(10, "How many ready batches the background thread keeps (with prefetch "
                                  "batches on). More smooths longer stalls and holds more batches in "
                                  "memory.", ge=1, le=256, group="advanced")
