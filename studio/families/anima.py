"""Anima (CircleStone Labs' anime model on NVIDIA's Cosmos-Predict2 DiT; diffusers `AnimaModularPipeline`).

Conditioning: the Qwen3 text encoder's last hidden state (padding zeroed) goes through the LLM adapter
(`text_conditioner`, diffusers' `AnimaTextConditioner`): learned embeddings of the caption's T5 token ids
cross-attend to the Qwen3 states; its output, padded to 512 tokens, is what the DiT's cross-attention
reads. The cache stores what the frozen parts give: the Qwen3 states and both token lists, padded to
`MAX_TOKENS` with their masks (the Qwen3 model is causal and the adapter masks its padding, so the
padding changes nothing); the LLM adapter runs every step, so `adapter.freeze_llm_adapter` off can train
it (the adapter then also goes into `text_conditioner`).

Latents: the Qwen-Image VAE (x8, 16 channels, one frame) normalised by its per-channel mean / std, as the
pipeline's decoder undoes it. The DiT takes (B, C, 1, h, w), the time as sigma and a padding mask (all
zeros for whole images, as the pipeline passes), and predicts the velocity e - x0: the shared
rectified-flow loss of `flow.py` applies as it is.

Files: `adapter_model.safetensors` in diffusers' layout (`transformer.*`, `text_conditioner.*`, loaded by
the pipeline's `load_lora_weights`), and the single file in the layout ComfyUI loads for Anima:
`diffusion_model.<original module path>.lora_A/lora_B.weight` (the LLM adapter under
`diffusion_model.llm_adapter.`), alpha / rank folded into lora_B (no alpha keys: diffusers' loader refuses
them). That file is read back through the pipeline's `load_lora_weights`, whose own converter
(`_convert_non_diffusers_anima_lora_to_diffusers`) maps those names to diffusers'.

The Cosmos DiT resizes its padding mask with torchvision, which the studio does not install; without it,
`torch_resize_fallback` gives the DiT module the same nearest-neighbour resize done with torch.
"""
from __future__ import annotations

from pathlib import Path

import torch

from studio.adapters.loader_warnings import capture_loader_warnings
from studio.families.flow import FlowFamily
from studio.families.paths import resolve_model_path
from studio.families.rng import draw

MAX_TOKENS = 512  # the pipeline's default `max_sequence_length`, and the LLM adapter's padded length
TEXT_KEYS = ("qwen_prompt_embeds", "qwen_attention_mask", "t5_input_ids", "t5_attention_mask")
DIT_TARGETS = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
               "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2"]
LLM_ADAPTER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "mlp.0", "mlp.2"]
COMFY_PREFIX = "diffusion_model."


def torch_resize_fallback() -> None:
    """Give diffusers' Cosmos module the one torchvision call it makes (nearest resize of the padding
    mask) when torchvision is not installed; torchvision's tensor resize does the same interpolation."""
    import types

    import diffusers.models.transformers.transformer_cosmos as cosmos

    if hasattr(cosmos, "transforms"):
        return

    def resize(tensor, size, interpolation=None):
        return torch.nn.functional.interpolate(tensor, size=list(size), mode="nearest")

    cosmos.transforms = types.SimpleNamespace(functional=types.SimpleNamespace(resize=resize),
                                              InterpolationMode=types.SimpleNamespace(NEAREST="nearest"))


class AnimaFamily(FlowFamily):
    pipeline_class = "AnimaModularPipeline"
    transformer_class = "CosmosTransformer3DModel"
    # Single file: `single_file_tensors` (the ComfyUI layout). These names prefix LyCORIS' own keys, which
    # turn dots into underscores: the two must not share a start.
    kohya_prefixes = {"transformer": "diffusion_model", "text_conditioner": "llm_adapter"}
    architecture = "anima"
    base_version = "anima"

    # ---- loading ----------------------------------------------------------------------------------
    def load(self) -> None:
        from diffusers import AnimaModularPipeline

        from studio.config.single_file import is_single_file

        torch_resize_fallback()
        self.checked_model_path()
        kw = {"revision": self.cfg.model.revision or None}
        variant = {"variant": self.cfg.model.weight_variant or None}
        pipe = AnimaModularPipeline.from_pretrained(self.parts_path(), **kw)
        pipe.load_components(names=["tokenizer", "t5_tokenizer", "scheduler"])
        single = is_single_file(resolve_model_path(self.cfg.model.path))  # the DiT file of model.path
        pipe.load_components(names=["text_encoder", "text_conditioner"] + ([] if single else ["transformer"]),
                             dtype=self.dtype, **variant)
        pipe.load_components(names=["vae"], dtype=self.vae_dtype, **variant)
        self.tokenizer, self.t5_tokenizer = pipe.tokenizer, pipe.t5_tokenizer
        self.noise_scheduler = pipe.scheduler
        self.text_encoders = [pipe.text_encoder]
        self.text_conditioner, self.vae = pipe.text_conditioner, pipe.vae
        self.transformer = (self.load_transformer(variant | kw, {}, conditioner=self.text_conditioner) if single
                            else pipe.transformer)
        for module in (self.vae, self.transformer, self.text_conditioner, *self.text_encoders):
            module.requires_grad_(False)
            module.eval()
        self.transformer.to(self.device)
        self.text_conditioner.to(self.device)
        from studio.data.image_cache import attach_image_cache

        self.cache = attach_image_cache(self)
        self.place_encoders(vae=not (self.cache and self.cache.serves_latents),
                            text=not (self.cache and self.cache.serves_text))

    def load_transformer(self, weights: dict, options: dict, conditioner=None) -> torch.nn.Module:
        """The DiT from `model.path`; from a single file, the file's LLM adapter also goes into
        `conditioner` (diffusers keeps it as the separate `text_conditioner`)."""
        from studio.config.single_file import is_single_file
        from studio.families.single_file import load_llm_adapter, load_transformer

        path = resolve_model_path(self.cfg.model.path)
        if not is_single_file(path):
            return super().load_transformer(weights, options)
        model, adapter = load_transformer(self.transformer_class, path, self.parts_path(), self.dtype, options,
                                          self.cfg.model.revision or None)
        load_llm_adapter(conditioner, adapter, path)
        return model

    def cache_identity(self, part: str) -> str:
        from studio.data.image_cache import LATENTS, model_identity

        folders = ("vae",) if part == LATENTS else ("text_encoder", "tokenizer", "t5_tokenizer")
        return model_identity(self.cfg, self.parts_path(), folders)

    def adapter_components(self, text_encoders: bool = False) -> dict[str, torch.nn.Module]:
        parts = {"transformer": self.transformer}
        if not self.cfg.adapter.freeze_llm_adapter:
            parts["text_conditioner"] = self.text_conditioner
        return parts

    def default_targets(self, component: str = "transformer") -> list[str]:
        return list(LLM_ADAPTER_TARGETS if component == "text_conditioner" else DIT_TARGETS)

    # ---- encoding ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 16, H/8, W/8), normalised by the VAE's per-channel mean / std."""
        pixels = pixels.to(self.vae.device, dtype=self.vae.dtype).unsqueeze(2)  # one frame
        dist = self.vae.encode(pixels).latent_dist
        if generator is None:
            latents = dist.mode()
        else:
            eps = draw(torch.randn, size=dist.mean.shape, generator=generator, rank=self.rank, world=self.world)
            latents = dist.mean + dist.std * eps.to(dist.mean)
        view = (1, -1, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean).view(view).to(latents)
        std = torch.tensor(self.vae.config.latents_std).view(view).to(latents)
        return ((latents - mean) / std).squeeze(2)

    @torch.no_grad()
    def encode_text(self, captions: list[str], encoders: list | None = None) -> dict[str, torch.Tensor]:
        """The pipeline's own prompt encoding (`AnimaTextEncoderStep.encode_prompt`), padded to MAX_TOKENS:
        Qwen3 states (B, T, D) with their mask, T5 token ids (B, T) with theirs."""
        from diffusers.modular_pipelines.anima.encoders import AnimaTextEncoderStep

        encoder = (encoders or self.text_encoders)[0]
        device = next(encoder.parameters()).device
        parts = _Parts(text_encoder=encoder, tokenizer=self.tokenizer, t5_tokenizer=self.t5_tokenizer)
        out = AnimaTextEncoderStep.encode_prompt(parts, list(captions), prepare_unconditional_embeds=False,
                                                 max_sequence_length=MAX_TOKENS, device=device, dtype=self.dtype)
        return {k: _pad(out[k], MAX_TOKENS) for k in TEXT_KEYS}

    @staticmethod
    def cached_text(batch: dict) -> dict[str, torch.Tensor]:
        return {k: batch[k] for k in TEXT_KEYS if k in batch}

    def place_encoders(self, vae: bool, text: bool) -> None:
        self.encoders_on_device = (vae, text)
        self.vae.to(self.device if vae else "cpu")
        self.text_encoders[0].to(self.device if text else "cpu", dtype=self.dtype)

    # ---- training ---------------------------------------------------------------------------------
    def condition(self, conditioner, text: dict, dtype: torch.dtype) -> torch.Tensor:
        """The LLM adapter's output (B, 512, D) for encoded captions: what the DiT cross-attends to."""
        dev = self.device
        return conditioner(source_hidden_states=text["qwen_prompt_embeds"].to(dev, conditioner.dtype),
                           target_input_ids=text["t5_input_ids"].to(dev),
                           target_attention_mask=text["t5_attention_mask"].to(dev),
                           source_attention_mask=text["qwen_attention_mask"].to(dev)).to(dtype)

    def predict(self, transformer, noisy, sigmas, text, dtype, conditioner=None):
        embeds = self.condition(conditioner or self.text_conditioner, text, dtype)
        mask = noisy.new_zeros(1, 1, *noisy.shape[-2:], dtype=dtype)  # whole images: nothing padded
        out = transformer(hidden_states=noisy.to(dtype).unsqueeze(2), timestep=sigmas.to(dtype),
                          encoder_hidden_states=embeds, padding_mask=mask, return_dict=False)[0]
        return out.squeeze(2)

    # ---- sampling ---------------------------------------------------------------------------------
    def pipeline(self, components: dict | None = None, text_encoders: list | None = None, guidance: float = 1.0):
        from diffusers import AnimaAutoBlocks, ClassifierFreeGuidance

        parts = {"transformer": self.transformer, "text_conditioner": self.text_conditioner, "vae": self.vae,
                 "text_encoder": (text_encoders or self.text_encoders)[0], "tokenizer": self.tokenizer,
                 "t5_tokenizer": self.t5_tokenizer, "scheduler": self.sampling_scheduler(),
                 "guider": ClassifierFreeGuidance(guidance_scale=guidance), **(components or {})}
        pipe = AnimaAutoBlocks().init_pipeline()
        pipe.update_components(**parts)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def render(self, pipe, prompt, meta: dict, generator: torch.Generator):
        pipe.update_components(guider=type(pipe.guider)(guidance_scale=meta["guidance"]))
        return pipe(prompt=prompt.prompt, negative_prompt=prompt.negative_prompt or None, height=meta["height"],
                    width=meta["width"], num_inference_steps=meta["steps"], generator=generator,
                    max_sequence_length=MAX_TOKENS, output="images")[0]

    def sample_meta(self, pipe) -> dict:
        return {"shift": pipe.scheduler.config.shift, "pipeline": "AnimaModularPipeline (AnimaAutoBlocks)"}

    # ---- files and export checks ------------------------------------------------------------------
    def save_adapter(self, out_dir: Path, state_dict: dict[str, torch.Tensor], adapter_config,
                     text_encoder_states: dict | None = None) -> None:
        """diffusers' layout: `transformer.<module>...` (+ `text_conditioner.<module>...`), the PEFT configs in
        the `lora_adapter_metadata` header as `save_lora_weights` writes them."""
        import json

        from studio.adapters.formats import ADAPTER_FILE, atomic_save_file

        tensors = {f"transformer.{k}": v for k, v in state_dict.items()}
        metadata = {"format": "pt"}
        packed = {}
        if adapter_config is not None:
            packed.update({f"transformer.{k}": v for k, v in adapter_config.to_dict().items()})
        for name, (states, config) in (text_encoder_states or {}).items():
            tensors.update({f"{name}.{k}": v for k, v in states.items()})
            if config is not None:
                packed.update({f"{name}.{k}": v for k, v in config.to_dict().items()})
        if packed:
            metadata["lora_adapter_metadata"] = json.dumps(packed, default=list, sort_keys=True)
        atomic_save_file(tensors, Path(out_dir) / ADAPTER_FILE, metadata)
        if adapter_config is not None:
            adapter_config.save_pretrained(str(out_dir))

    def single_file_tensors(self, handle, states: dict) -> dict[str, torch.Tensor]:
        """The ComfyUI file: `diffusion_model.<original path>.lora_A/lora_B.weight`, alpha / rank in lora_B."""
        from studio.adapters.writer import scaled_lora_layers

        layers = scaled_lora_layers(handle, states, "the ComfyUI file for Anima")
        return {f"{original_module_path(name, path)}.lora_{param}.weight": value
                for name, parts in layers.items() for path, factors in parts.items()
                for param, value in zip("AB", factors)}

    def kohya_unsupported(self, component: str, modules: list[str]) -> str:
        bad = [m for m in modules if not _round_trips(component, m)]
        if not bad:
            return ""
        return (f"{len(bad)} adapted layers have no name in the ComfyUI layout diffusers reads back "
                f"(e.g. {', '.join(bad[:3])}); use adapter_model.safetensors")

    def load_base_components(self, path: str | None = None) -> dict[str, torch.nn.Module]:
        from diffusers import AnimaTextConditioner, CosmosTransformer3DModel

        kw = {"torch_dtype": self.dtype}
        if not path:  # the trained base: model.path (a folder or the single file) and its parts
            weights = {"revision": self.cfg.model.revision or None, "variant": self.cfg.model.weight_variant or None}
            conditioner = AnimaTextConditioner.from_pretrained(self.parts_path(), subfolder="text_conditioner",
                                                               **kw, **weights)
            out = {"transformer": self.load_transformer(weights, {}, conditioner=conditioner),
                   "text_conditioner": conditioner}
        else:  # a merged folder the studio wrote
            out = {"transformer": CosmosTransformer3DModel.from_pretrained(str(path), subfolder="transformer", **kw),
                   "text_conditioner": AnimaTextConditioner.from_pretrained(str(path), subfolder="text_conditioner",
                                                                            **kw)}
        for net in out.values():
            net.requires_grad_(False)
            net.eval()
            net.to(self.device)
        return out

    @property
    def latent_channels(self) -> int:
        return self.vae.config.z_dim  # the Qwen-Image VAE's name for it

    @torch.no_grad()
    def verification_forward(self, components: dict[str, torch.nn.Module], inputs: dict,
                             dtype: torch.dtype) -> torch.Tensor:
        with self.encoders_placed(vae=False):
            text = self.encode_text(inputs["caption"])
        latents = inputs["latents"].to(self.device, dtype)
        out = self.predict(components.get("transformer", self.transformer), latents,
                           inputs["sigma"].to(self.device), text, dtype,
                           conditioner=components.get("text_conditioner", self.text_conditioner))
        return out.float().cpu()

    def load_lora_file(self, components: dict[str, torch.nn.Module], file: Path) -> list[str]:
        """The pipeline's `load_lora_weights` (which converts the ComfyUI layout itself)."""
        pipe = self.pipeline(components)
        file = Path(file)
        with capture_loader_warnings("diffusers", "transformers") as messages:
            pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name="exported")
        return messages

    def save_merged(self, out_dir: Path, components: dict[str, torch.nn.Module]) -> None:
        self.pipeline(components).save_pretrained(str(out_dir), safe_serialization=True,
                                                  overwrite_modular_index=True)
        portable_index(Path(out_dir) / "modular_model_index.json", "merged")


def portable_index(index: Path, repo: str) -> None:
    """`save_pretrained` records the absolute save path per component; a repo name instead keeps two writes
    byte-identical and the folder movable (diffusers loads components found in the local folder from it)."""
    import json

    info = json.loads(index.read_text(encoding="utf-8"))
    for value in info.values():
        if isinstance(value, list) and len(value) == 3 and isinstance(value[2], dict):
            value[2]["pretrained_model_name_or_path"] = repo
    index.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class _Parts:
    """The components `AnimaTextEncoderStep.encode_prompt` reads, without building a pipeline."""

    def __init__(self, **parts):
        self.__dict__.update(parts)


def _pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad dim 1 with zeros to `length` (zeros: padding states, pad ids and masked positions)."""
    extra = length - tensor.shape[1]
    if extra <= 0:
        return tensor[:, :length]
    pad = tensor.new_zeros(tensor.shape[0], extra, *tensor.shape[2:])
    return torch.cat([tensor, pad], dim=1)


def original_module_path(component: str, path: str) -> str:
    """diffusers module path -> the original (ComfyUI) key stem, the inverse of diffusers' converter."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_anima_lora_to_diffusers as conv

    if component == "text_conditioner":
        return f"{COMFY_PREFIX}llm_adapter.{path}"
    renames = _renames(conv)
    native = path
    for diffusers_part, original in sorted(renames.items(), key=lambda item: -len(item[0])):
        native = native.replace(diffusers_part, original)
    return COMFY_PREFIX + native


def _renames(conv) -> dict[str, str]:
    """diffusers -> original name parts, read off the converter by converting each original name."""
    originals = ["blocks.", "adaln_modulation_self_attn.1", "adaln_modulation_self_attn.2",
                 "adaln_modulation_cross_attn.1", "adaln_modulation_cross_attn.2", "adaln_modulation_mlp.1",
                 "adaln_modulation_mlp.2", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                 "self_attn.output_proj", "cross_attn.q_proj", "cross_attn.k_proj", "cross_attn.v_proj",
                 "cross_attn.output_proj", "mlp.layer1", "mlp.layer2", "final_layer.adaln_modulation.1",
                 "final_layer.adaln_modulation.2", "final_layer.linear", "t_embedder.1", "t_embedding_norm",
                 "x_embedder.proj.1"]
    out = {}
    for original in originals:
        converted = next(iter(conv({f"{COMFY_PREFIX}{original}.lora_A.weight": 0})))
        out[converted.removeprefix("transformer.").removesuffix(".lora_A.weight")] = original
    return out


def _round_trips(component: str, path: str) -> bool:
    """Whether diffusers' converter maps the written name back to this module."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_anima_lora_to_diffusers as conv

    key = f"{original_module_path(component, path)}.lora_A.weight"
    return next(iter(conv({key: 0}))) == f"{component}.{path}.lora_A.weight"
