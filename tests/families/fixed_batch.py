"""Training truth on one fixed batch for the image families: the same noise and timesteps at every step,
so only the adapter can change the loss."""
from __future__ import annotations

import math

import torch

# A few CPU steps of a tiny image family: plain LoRA, constant lr, nothing saved, sampled or evaluated.
FAST = {"training": {"max_steps": 3, "batch_size": 2, "gradient_accumulation_steps": 1, "learning_rate": 0.02,
                     "seed": 5},
        "adapter": {"type": "lora", "rank": 4, "alpha": 8, "dropout": 0.0},
        "scheduler": {"name": "constant", "warmup_steps": 0, "warmup_ratio": 0.0},
        "memory": {"mixed_precision": "no", "gradient_checkpointing": False},
        "dataloader": {"num_workers": 0}, "checkpointing": {"save_strategy": "no"},
        "evaluation": {"strategy": "no"}, "logging": {"logging_steps": 1, "tensorboard": False},
        "sampling": {"prompts": [], "every_steps": 0, "at_end": False}}


def fixed_batch(fam) -> dict:
    """Two training items with their latents (no VAE noise) and text encodings computed once."""
    data = fam.train_dataset("train")
    batch = fam.collate([data[0], data[1]])
    batch["latents"] = fam.encode_images(batch.pop("pixel_values"))
    batch.update(fam.encode_text(batch["caption"]))
    return batch


def assert_loss_falls(fam, handle, batch: dict, steps: int = 12, lr: float = 0.01) -> list[float]:
    """AdamW on the adapter over `batch` with the generator seeded alike each step; the losses stay
    finite and the last is below 0.9 x the first. Returns the losses."""
    opt = torch.optim.AdamW(handle.trainable_params(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = fam.loss(batch, torch.Generator().manual_seed(7))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses
    return losses
