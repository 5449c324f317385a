"""The GPU bench's models: real-size architectures with random weights built from their configs
(nothing to download), the studio's families loading them instead of a folder, synthetic cached
data, and the matching bare PyTorch + PEFT loops.

SDXL: stabilityai/stable-diffusion-xl-base-1.0's UNet config (2.57 B parameters); the studio trains
it from "cached" latents and text embeddings, as after `studio preprocess`.
LLM: Llama-3.1-8B's config (8.03 B parameters), SFT-style next-token loss on random token ids.
Flux: black-forest-labs/FLUX.1-dev's transformer config (11.9 B parameters), rectified-flow loss from
cached latents and T5 / CLIP embeddings.
`smoke` sizes shrink them so the same code runs on a CPU in seconds (tests).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from studio.data.dataset import TrainingData
from studio.families.causal_lm import CausalLmFamily
from studio.families.flow_export import ATTENTION_TARGETS
from studio.families.flux import FluxFamily
from studio.families.sd import SdFamily

SDXL_UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], in_channels=4,
    layers_per_block=2, norm_num_groups=32, out_channels=4, projection_class_embeddings_input_dim=2816,
    sample_size=128, transformer_layers_per_block=[1, 2, 10], use_linear_projection=True,
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"])
SDXL_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      prediction_type="epsilon")
LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                rms_norm_eps=1e-5, tie_word_embeddings=False)
# FLUX.1-dev's transformer/config.json and scheduler/scheduler_config.json
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=[16, 56, 56])
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                      base_image_seq_len=256, max_image_seq_len=4096)
LLM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Workload shapes. SDXL: 1024 px -> (4, 128, 128) latents, 77 tokens of 2048 (CLIP-L + bigG), pooled 1280.
SIZES = {
    "full": {"sdxl": {"unet": SDXL_UNET, "resolution": 1024, "batch": 4, "text_dim": 2048, "pooled": 1280,
                      "rank": 32},
             "llm": {"model": LLAMA_8B, "seq": 2048, "batch": 4, "rank": 32}},
    "smoke": {"sdxl": {"unet": {**SDXL_UNET, "block_out_channels": [32, 64, 64], "attention_head_dim": [2, 4, 4],
                                "transformer_layers_per_block": [1, 1, 1], "cross_attention_dim": 32,
                                "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 16,
                                "norm_num_groups": 8, "layers_per_block": 1, "sample_size": 8},
                       "resolution": 64, "batch": 2, "text_dim": 32, "pooled": 16, "rank": 4},
              "llm": {"model": {**LLAMA_8B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256},
                      "seq": 32, "batch": 2, "rank": 4},
              "flux": {"transformer": {**FLUX_DEV, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
                                       "num_attention_heads": 2, "joint_attention_dim": 32,
                                       "pooled_projection_dim": 16, "axes_dims_rope": [4, 6, 6]},
                       "resolution": 64, "batch": 1, "text_tokens": 8, "rank": 4}},
}
# 1024 px -> (16, 128, 128) latents = 4096 image tokens; 512 T5 tokens of 4096, CLIP-L pooled 768.
SIZES["full"]["flux"] = {"transformer": FLUX_DEV, "resolution": 1024, "batch": 1, "text_tokens": 512, "rank": 32}


def build_unet(spec: dict, device, dtype):
    """UNet with random weights, initialised directly on the device (seconds, not minutes, for 2.6 B)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**spec["unet"])
    return unet.to(dtype=dtype).requires_grad_(False)


def built_in(dtype, device, make):
    """`make()` with random weights created directly in the training dtype on the device: an fp32 copy
    first would need 32 GB for the 8 B model, 48 GB for Flux."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return make()
    finally:
        torch.set_default_dtype(previous)


def build_llm(spec: dict, device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = built_in(dtype, device, lambda: LlamaForCausalLM(LlamaConfig(**spec["model"])))
    model.config.use_cache = False
    return model.requires_grad_(False)


def build_flux(spec: dict, device, dtype):
    """FLUX.1-dev-size transformer with random weights, built in the training dtype on the device."""
    from diffusers import FluxTransformer2DModel

    return built_in(dtype, device, lambda: FluxTransformer2DModel(**spec["transformer"])).requires_grad_(False)


class SyntheticItems(TrainingData):
    """Fixed random tensors per item, as a cache would serve them (indexed like the studio's datasets)."""

    def __init__(self, tensors: dict[str, torch.Tensor], caption: str | None = None):
        self.tensors, self.caption = tensors, caption
        self.length = next(iter(tensors.values())).shape[0]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key) -> dict:
        index = key[0] if isinstance(key, tuple) else key
        item = {k: v[index] for k, v in self.tensors.items()}
        if self.caption is not None:  # the SD families' collate keeps captions beside the tensors
            item["caption"] = self.caption
        return item


def sdxl_items(spec: dict, count: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    side, res = spec["resolution"] // 8, spec["resolution"]
    return {"latents": torch.randn(count, 4, side, side, generator=g),
            "prompt_embeds": torch.randn(count, 77, spec["text_dim"], generator=g),
            "pooled_prompt_embeds": torch.randn(count, spec["pooled"], generator=g),
            "original_size": torch.tensor([[res, res]] * count), "crop_top_left": torch.zeros(count, 2, dtype=torch.long),
            "target_size": torch.tensor([[res, res]] * count)}


def llm_items(spec: dict, count: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, spec["model"]["vocab_size"], (count, spec["seq"]), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def flux_items(spec: dict, count: int) -> dict[str, torch.Tensor]:
    g, t = torch.Generator().manual_seed(0), spec["transformer"]
    side = spec["resolution"] // 8
    return {"latents": torch.randn(count, t["in_channels"] // 4, side, side, generator=g),
            "prompt_embeds": torch.randn(count, spec["text_tokens"], t["joint_attention_dim"], generator=g),
            "pooled_prompt_embeds": torch.randn(count, t["pooled_projection_dim"], generator=g)}


class RandomSdxlFamily(SdFamily):
    """The studio's SDXL family, with the UNet built from `SPEC` instead of loaded, and no VAE or text
    encoders (training reads latents and embeddings, as from a fresh cache)."""

    SPEC: dict = {}
    ITEMS = 32

    def load(self) -> None:
        from diffusers import DDPMScheduler

        self.model_path = "random:sdxl"
        self.noise_scheduler = DDPMScheduler(**SDXL_SCHEDULER)
        self.unet = build_unet(self.SPEC, self.device, self.dtype)
        self.vae, self.text_encoders, self.tokenizers, self.cache = None, [], [], None

    def train_dataset(self, split: str = "train"):
        return SyntheticItems(sdxl_items(self.SPEC, self.ITEMS if split == "train" else 0), caption="")


class RandomFluxFamily(FluxFamily):
    """The studio's Flux family, with the transformer built from `SPEC` instead of loaded, and no VAE or
    text encoders (training reads cached latents and embeddings)."""

    SPEC: dict = {}
    ITEMS = 16

    def load(self) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.model_path = "random:flux"
        self.noise_scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
        self.transformer = build_flux(self.SPEC, self.device, self.dtype)
        self.vae, self.text_encoders, self.tokenizers, self.cache = None, [], [], None
        self.encoders_on_device = (False, False)

    def train_dataset(self, split: str = "train"):
        return SyntheticItems(flux_items(self.SPEC, self.ITEMS if split == "train" else 0), caption="")


class RandomLlmFamily(CausalLmFamily):
    """The studio's causal-LM family, with a random Llama built from `SPEC` and fixed-length token rows."""

    SPEC: dict = {}
    ITEMS = 32

    def load(self) -> None:
        self.model_path, self.tokenizer = "random:llama", None
        self.model = build_llm(self.SPEC, self.device, self.dtype)

    def train_dataset(self, split: str = "train"):
        return SyntheticItems(llm_items(self.SPEC, self.ITEMS if split == "train" else 0))

    def collate(self, items: list[dict]) -> dict:
        if self.cfg.data.packing:  # the studio's padding-free rows (the `packing` variant)
            return super().collate([{"input_ids": it["input_ids"].tolist(), "labels": it["labels"].tolist()}
                                    for it in items])
        return torch.utils.data.default_collate(items)  # equal lengths: no padding needed


class BareSdxl:
    """diffusers' train_text_to_image_lora_sdxl.py step, from cached latents, without the studio."""

    def __init__(self, spec: dict, device, dtype, gradient_checkpointing: bool, lr: float = 1e-4):
        from diffusers import DDPMScheduler
        from peft import LoraConfig

        self.device, self.dtype, self.spec = torch.device(device), dtype, spec
        self.unet = build_unet(spec, device, dtype)
        self.unet.add_adapter(LoraConfig(r=spec["rank"], lora_alpha=spec["rank"], init_lora_weights="gaussian",
                                         target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.params = _fp32_trainable(self.unet)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=1e-2)
        self.noise_scheduler = DDPMScheduler(**SDXL_SCHEDULER)
        items = sdxl_items(spec, spec["batch"])  # one batch, on the device: the floor has no data loading
        self.batch = {k: v.to(self.device) for k, v in items.items()}
        self.unet.train()

    def step(self) -> torch.Tensor:
        b = self.batch
        latents = b["latents"].to(self.dtype)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (latents.shape[0],), device=self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        time_ids = torch.cat([b["original_size"], b["crop_top_left"], b["target_size"]], dim=1).to(self.dtype)
        cond = {"text_embeds": b["pooled_prompt_embeds"].to(self.dtype), "time_ids": time_ids}
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            pred = self.unet(noisy, timesteps, b["prompt_embeds"].to(self.dtype), added_cond_kwargs=cond,
                             return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float())
        return _optimize(loss, self.params, self.optimizer)


class BareFlux:
    """diffusers' train_dreambooth_lora_flux.py step from cached latents and embeddings, without the studio:
    rectified flow with uniform timesteps, Flux-dev's guidance input, LoRA on the attention projections."""

    def __init__(self, spec: dict, device, dtype, gradient_checkpointing: bool, lr: float = 1e-4):
        from peft import LoraConfig

        self.device, self.dtype, self.spec = torch.device(device), dtype, spec
        self.transformer = build_flux(spec, device, dtype)
        self.transformer.add_adapter(LoraConfig(r=spec["rank"], lora_alpha=spec["rank"], init_lora_weights="gaussian",
                                                target_modules=ATTENTION_TARGETS))
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.params = _fp32_trainable(self.transformer)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=1e-2)
        self.batch = {k: v.to(self.device) for k, v in flux_items(spec, spec["batch"]).items()}
        self.transformer.train()

    def forward(self, transformer, latents: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        from diffusers import FluxPipeline

        b, c, h, w = latents.shape
        s = sigmas.view(-1, 1, 1, 1)
        noisy = ((1.0 - s) * latents + s * noise).to(self.dtype)
        packed = FluxPipeline._pack_latents(noisy, b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, self.device, self.dtype)
        prompt = self.batch["prompt_embeds"].to(self.dtype)
        txt_ids = torch.zeros(prompt.shape[1], 3, device=self.device, dtype=self.dtype)
        guidance = torch.full((b,), 3.5, device=self.device, dtype=self.dtype)
        out = transformer(hidden_states=packed, timestep=sigmas.to(self.dtype), guidance=guidance,
                          pooled_projections=self.batch["pooled_prompt_embeds"].to(self.dtype),
                          encoder_hidden_states=prompt, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        return FluxPipeline._unpack_latents(out, h * 8, w * 8, 8)

    def step(self) -> torch.Tensor:
        latents = self.batch["latents"]
        noise = torch.randn_like(latents)
        sigmas = torch.rand(latents.shape[0], device=self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            pred = self.forward(self.transformer, latents, sigmas, noise)
        loss = F.mse_loss(pred.float(), (noise - latents).float())
        return _optimize(loss, self.params, self.optimizer)


class BareLlm:
    """A plain transformers + PEFT SFT step (what TRL's SFTTrainer runs per step, minus the Trainer)."""

    def __init__(self, spec: dict, device, dtype, gradient_checkpointing: bool, lr: float = 1e-4):
        from peft import LoraConfig, get_peft_model

        self.device, self.dtype = torch.device(device), dtype
        model = build_llm(spec, device, dtype)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = get_peft_model(model, LoraConfig(r=spec["rank"], lora_alpha=spec["rank"], target_modules=LLM_TARGETS))
        self.params = _fp32_trainable(self.model)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=1e-2)
        self.batch = {k: v.to(self.device) for k, v in llm_items(spec, spec["batch"]).items()}
        self.model.train()

    def step(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            loss = self.model(**self.batch, use_cache=False).loss
        return _optimize(loss, self.params, self.optimizer)


def _fp32_trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:  # as diffusers' cast_training_params: LoRA weights train in fp32
        p.data = p.data.float()
    return params


def _optimize(loss: torch.Tensor, params: list, optimizer: torch.optim.Optimizer, max_norm: float = 1.0):
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()
