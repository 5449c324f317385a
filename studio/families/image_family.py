"""What every image family (SD, SD3, Flux) does the same way: its dataset, its batches, and moving the
VAE / text encoders onto the device for a while (sampling, export checks) when the cache keeps them off it."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from studio.families.rng import on_device


class ImageFamilyMixin:
    def train_dataset(self, split: str = "train"):
        from studio.data.image_source import build_image_dataset

        return build_image_dataset(self.cfg, split, cache=getattr(self, "cache", None))

    def collate(self, items: list[dict]) -> dict:
        batch = torch.utils.data.default_collate([{k: v for k, v in it.items() if k != "caption"} for it in items])
        batch["caption"] = [it["caption"] for it in items]
        return batch

    def batch_latents(self, batch: dict, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        """The batch's latents: cached ones, or its pixels encoded now (noise of the VAE from `generator`)."""
        latents = batch.get("latents")
        if latents is None:
            latents = self.encode_images(batch["pixel_values"], generator)
        return on_device(latents, self.device, dtype)

    @staticmethod
    def cached_text(batch: dict) -> dict[str, torch.Tensor]:
        """The text-encoder outputs the cache put into the batch ({} when captions are encoded per step)."""
        return {k: batch[k] for k in ("prompt_embeds", "pooled_prompt_embeds", "prompt_lengths") if k in batch}

    @contextmanager
    def encoders_placed(self, vae: bool = True, text: bool = True):
        """The VAE / text encoders on the device inside the block (where asked), as they were after it."""
        placed = getattr(self, "encoders_on_device", (True, True))
        self.place_encoders(vae=vae or placed[0], text=text or placed[1])
        try:
            yield
        finally:
            self.place_encoders(*placed)

    # ---- sampling (the pipeline and one image are the family's: `pipeline()`, `render()`) ---------------
    @torch.no_grad()
    def sample(self, prompts: list, step: int) -> list:
        from studio.families.base import Sample

        with self.encoders_placed():  # sampling encodes prompts and decodes on the device
            pipe, sampling, res = self.pipeline(), self.cfg.sampling, self.cfg.data.resolution
            out = []
            for p in prompts:
                meta = {"prompt": p.prompt, "negative_prompt": p.negative_prompt, "seed": p.seed,
                        "steps": p.steps or sampling.default_steps,
                        "guidance": p.guidance if p.guidance >= 0 else sampling.default_guidance,
                        "width": p.width or res, "height": p.height or res,
                        "scheduler": type(pipe.scheduler).__name__, **self.sample_meta(pipe), "step": step}
                image = self.render(pipe, p, meta, torch.Generator().manual_seed(p.seed))
                out.append(Sample(image, "image", meta))
            return out

    def sample_meta(self, pipe) -> dict:
        """Family-specific entries of a sample's metadata (e.g. the schedule shift)."""
        return {}

    def render(self, pipe, prompt, meta: dict, generator: torch.Generator):
        """One PIL image for `prompt` with the settings in `meta`."""
        raise NotImplementedError
