"""CLIP score of generated images against their prompts (FIELDS E05, `evaluation.evaluation_type=clip`).

The score of one (image, prompt) pair is 100 x the cosine similarity of CLIP's projected image and
text embeddings, as torchmetrics' CLIPScore without its floor at 0 (so it lies in [-100, 100] and a
worse image can still be told from a bad one). The model and its processor are transformers'
`CLIPModel` and `AutoProcessor`, from a local folder or a hub id.
"""
from __future__ import annotations

import torch


class ClipScorer:
    def __init__(self, model_path: str, device: torch.device):
        from transformers import AutoProcessor, CLIPModel

        dtype = torch.float16 if device.type == "cuda" else torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(model_path)
            self.model = CLIPModel.from_pretrained(model_path, dtype=dtype).to(device).eval()
        except (OSError, ValueError) as err:
            raise ValueError(f"evaluation.clip_model: cannot load a CLIP model and processor from "
                             f"{model_path!r}: {err}") from None
        self.model.requires_grad_(False)
        self.device = device

    @torch.no_grad()
    def scores(self, images: list, prompts: list[str]) -> list[float]:
        """One score per (image, prompt) pair, in order."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
        inputs = self.processor(text=prompts, images=images, return_tensors="pt", padding=True, truncation=True)
        dtype = self.model.dtype  # pixels in the model's dtype (fp16 on a GPU); token ids stay integers
        out = self.model(**{k: v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device)
                            for k, v in inputs.items()})
        image, text = out.image_embeds.float(), out.text_embeds.float()  # projected and L2-normalised
        cosine = torch.nn.functional.cosine_similarity(image, text, dim=-1)
        return [round(float(v), 4) for v in 100 * cosine]

    def mean_score(self, images: list, prompts: list[str]) -> float:
        values = self.scores(images, prompts)
        return round(sum(values) / len(values), 4)
