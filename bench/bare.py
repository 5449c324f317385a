"""The floor: a bare PyTorch + PEFT LoRA loop on an SD UNet, written the way diffusers'
`examples/text_to_image/train_text_to_image_lora.py` trains, without the studio around it.

Two modes, fed the same data as the studio:
  cached  latents and text embeddings from the studio's cache, held in memory (the floor);
  vae     pixels and token ids in memory, VAE + text encoder run every step (what the diffusers
          example does; image decoding is left out, the example does it in DataLoader workers).

This module imports no studio code, so `python -m bench.bare` measures a lean process
(time from command to first step, peak RSS):

    python -m bench.bare --mode cached --model DIR --data bare_data.safetensors \
        --settings '{"rank": 4, ...}' --steps 3 --progress OUT.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F


class BareLoop:
    """One training step per `step()` call; the data is iterated in shuffled epochs of batches."""

    def __init__(self, model_dir: str, data: dict[str, torch.Tensor], settings: dict, mode: str = "cached",
                 device: str = "cpu", dtype: torch.dtype = torch.float32):
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from diffusers.optimization import get_scheduler
        from peft import LoraConfig

        if mode not in ("cached", "vae"):
            raise ValueError(f"mode must be 'cached' or 'vae', got {mode!r}")
        self.mode, self.device, self.dtype, self.s = mode, torch.device(device), dtype, settings
        self.noise_scheduler = DDPMScheduler.from_pretrained(model_dir, subfolder="scheduler")
        self.unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
        self.unet.requires_grad_(False)
        self.unet.to(self.device, dtype=dtype)
        self.unet.add_adapter(LoraConfig(r=settings["rank"], lora_alpha=settings["alpha"],
                                         lora_dropout=settings["dropout"], init_lora_weights="gaussian",
                                         target_modules=settings["target_modules"]))
        self.params = [p for p in self.unet.parameters() if p.requires_grad]
        for p in self.params:  # trainable LoRA weights in fp32, as diffusers' cast_training_params
            p.data = p.data.float()
        self.optimizer = torch.optim.AdamW(self.params, lr=settings["learning_rate"],
                                           betas=tuple(settings["betas"]), eps=settings["eps"],
                                           weight_decay=settings["weight_decay"])
        self.lr_scheduler = get_scheduler(settings["scheduler"], self.optimizer,
                                          num_warmup_steps=0, num_training_steps=10**9)
        if mode == "vae":
            self._load_encoders(model_dir)
        self.data = data
        self.n_items = next(iter(data.values())).shape[0]
        self.batch_size = settings["batch_size"]
        self.generator = torch.Generator().manual_seed(settings["seed"])
        self._batches = iter(())
        self.unet.train()

    def _load_encoders(self, model_dir: str) -> None:
        from diffusers import AutoencoderKL
        from transformers import CLIPTextModel

        self.vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae")
        self.text_encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder")
        for module in (self.vae, self.text_encoder):
            module.requires_grad_(False)
            module.to(self.device, dtype=self.dtype)

    def _next_batch(self) -> torch.Tensor:
        """Indices of the next batch; a new shuffled order each epoch, last partial batch kept."""
        try:
            return next(self._batches)
        except StopIteration:
            order = torch.randperm(self.n_items, generator=self.generator)
            self._batches = iter(order.split(self.batch_size))
            return next(self._batches)

    def _inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> latents (B, 4, h, w), encoder hidden states (B, 77, D)."""
        if self.mode == "cached":
            return (self.data["latents"][idx].to(self.device, self.dtype),
                    self.data["prompt_embeds"][idx].to(self.device, self.dtype))
        with torch.no_grad():
            pixels = self.data["pixel_values"][idx].to(self.device, self.dtype)
            latents = self.vae.encode(pixels).latent_dist.sample() * self.vae.config.scaling_factor
            hidden = self.text_encoder(self.data["input_ids"][idx].to(self.device), return_dict=False)[0]
        return latents, hidden

    def step(self) -> torch.Tensor:
        """One optimizer step; returns the loss without reading it back (no host sync)."""
        latents, hidden = self._inputs(self._next_batch())
        noise = torch.randn_like(latents)
        bsz = latents.shape[0]
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,), device=self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            pred = self.unet(noisy, timesteps, hidden, return_dict=False)[0]
        target = noise
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        loss.backward()
        if self.s["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.s["max_grad_norm"])
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def main(argv: list[str] | None = None) -> int:
    """Load, train `--steps` steps, append `{"step", "loss", "time"}` per step to `--progress`."""
    p = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["cached", "vae"], default="cached")
    p.add_argument("--model", required=True, help="diffusers model folder (unet/, scheduler/, vae/, ...)")
    p.add_argument("--data", required=True, help="safetensors file written by the bench (latents, ...)")
    p.add_argument("--settings", required=True, help="JSON object: rank, alpha, learning_rate, ...")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--progress", required=True, help="JSON lines file, one line per step")
    args = p.parse_args(argv)
    from safetensors.torch import load_file

    loop = BareLoop(args.model, load_file(args.data), json.loads(args.settings), mode=args.mode)
    with open(Path(args.progress), "a", encoding="utf-8") as fh:
        for step in range(1, args.steps + 1):
            loss = loop.step()
            fh.write(json.dumps({"step": step, "loss": float(loss), "time": time.time()}) + "\n")
            fh.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
