"""`memory` and `dataloader` sections (FIELDS §8, §9)."""
from __future__ import annotations

from typing import Literal

from studio.config.fields import Section, setting


class MemorySection(Section):
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = setting(
        "auto", "Precision of the frozen model and the forward pass. `auto`: bf16 on GPUs that support it, "
        "else fp16 on CUDA, full precision on CPU. Trainable weights always stay in fp32.")
    gradient_checkpointing: bool = setting(True, "Recompute activations during the backward pass instead "
                                           "of storing them: 40-60 % less memory, 10-30 % slower, same "
                                           "result.")
    tf32: bool = setting(False, "Allow TensorFloat-32 matrix maths on NVIDIA Ampere or newer: faster, "
                         "slightly less exact.", group="advanced")
    torch_compile: bool = setting(False, "Compile the model with torch.compile: the first steps are slow, "
                                  "later ones faster. Mostly worth it on long GPU runs.", group="advanced")
    offload_encoder: bool = setting(False, "Keep the VAE and text/condition encoders in system RAM while "
                                    "training (training reads preprocessed tensors); they visit the GPU "
                                    "only for samples. Frees a few GB of VRAM at no cost in quality.",
                                    families=("acestep",))


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
