"""The ModelFamily contract: every hook the rest of the studio calls on a family, declared here.

Code outside `studio/families/` talks to a family only through these hooks (never `hasattr`, never the
family's name), so a new family is its own module(s) plus one row in `studio/registry/families.py`.
`docs/family-template.md` says for each hook when it is called, what it gets and what it returns.
Hooks with a default are optional; the defaults say what the studio does without them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from studio.registry.families import family_ids, load_attr, row

if TYPE_CHECKING:
    from studio.data.dataset import TrainingData


def get_family_class(name: str) -> type["ModelFamily"]:
    """The ModelFamily class of a family id, from the family registry (imported on first use)."""
    info = row(name)
    if info.family_class is None:
        raise ValueError(f"model.family '{name}' has no trainer yet; trainable families: "
                         + ", ".join(family_ids(trainable=True)))
    return load_attr(info.family_class)


def build_family(cfg, device: torch.device, dtype: torch.dtype) -> "ModelFamily":
    return get_family_class(cfg.model.family)(cfg, device, dtype)


@dataclass
class Sample:
    """One generated sample: the artefact, its file suffix and exactly what produced it."""

    data: Any  # PIL image, (waveform, sample_rate) or text
    kind: str  # "image" | "audio" | "text"
    meta: dict = field(default_factory=dict)


class ModelFamily(ABC):
    """One model architecture. Lifecycle: `load()` -> `trainable_module()` gets adapters ->
    `train_dataset()` feeds `loss(batch, generator)` -> `sample(prompts)` / `save_adapter(...)`."""

    kind: str = "image"  # the kind of `Sample` it renders: "image" | "audio" | "text"
    # Set by the trainer with several processes: loss() draws its randomness for the global batch
    # through `studio.families.rng.draw(..., rank=self.rank, world=self.world)` and keeps its rows.
    rank: int = 0
    world: int = 1

    def __init__(self, cfg, device: torch.device, dtype: torch.dtype):
        self.cfg = cfg
        self.device = device
        self.dtype = dtype  # dtype of the frozen weights; trainable weights stay fp32

    # ---- training -----------------------------------------------------------------------------------
    @abstractmethod
    def load(self) -> None:
        """Load every part from `cfg.model.path`, frozen, on the device."""

    @abstractmethod
    def trainable_module(self) -> torch.nn.Module:
        """The network adapters are injected into (UNet, transformer, LM)."""

    @abstractmethod
    def train_dataset(self, split: str = "train") -> "TrainingData":
        """Items for the DataLoader; `split` is "train" or "eval" (an empty dataset: no eval)."""

    def collate(self, items: list[dict]) -> dict:
        return torch.utils.data.default_collate(items)

    @abstractmethod
    def loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """Scalar training loss. All randomness (noise, timesteps) comes from `generator`."""

    def loss_weight(self, batch: dict) -> int:
        """How much this batch's mean loss counts in the eval loss over the whole split: its items (rows)
        by default, so each held-out item counts once whatever the batch size."""
        return len(next(iter(batch.values())))

    def eval_metrics(self, loss: float) -> dict[str, float]:
        """Extra evaluation metrics derived from the mean eval loss (e.g. perplexity)."""
        return {}

    def gradient_checkpointing(self) -> None:
        from studio.families.checkpointing import every_nth_block

        module = self.trainable_module()
        if hasattr(module, "enable_gradient_checkpointing"):  # diffusers: every block, or every Nth
            module.enable_gradient_checkpointing(
                every_nth_block(module, self.cfg.memory.gradient_checkpointing_interval))
        elif hasattr(module, "gradient_checkpointing_enable"):
            module.gradient_checkpointing_enable()

    def compile(self, blocks: bool, options: dict) -> int:
        """torch.compile the trainable network in place (first steps slow, later faster), whole or, with
        `blocks`, each of its repeated blocks on its own (regional compilation); `options` go to
        torch.compile. Returns how many modules were compiled."""
        module = self.trainable_module()
        if not blocks:
            module.compile(**options)
            return 1
        # diffusers' `_repeated_blocks` (what its compile_repeated_blocks uses), else the `_no_split_modules`
        # both libraries declare: the layers kept whole when a model is split over devices.
        names = set(getattr(module, "_repeated_blocks", None) or getattr(module, "_no_split_modules", None) or [])
        found = [m for m in module.modules() if type(m).__name__ in names]
        if not found:
            raise ValueError(f"memory.compile_scope: {type(module).__name__} declares no repeated blocks to "
                             "compile one by one; use 'model'")
        for block in found:
            block.compile(**options)
        return len(found)

    def use_flash_attn(self) -> None:
        """Route the network's attention through the flash-attn package (memory.attention_backend)."""
        raise ValueError(f"memory.attention_backend: 'flash_attn' is not available for {self.cfg.model.family}: its "
                         "attention calls PyTorch's SDPA directly; choose 'flash' (PyTorch's own FlashAttention "
                         "kernel)")

    # ---- where the adapter goes (studio/adapters: targets, kohya file) ---------------------------------
    kohya_prefixes: dict[str, str] = {}  # component -> key prefix in kohya/ComfyUI files; {} = no such file

    @abstractmethod
    def default_targets(self, component: str = "model") -> list[str]:
        """Module names the adapter targets on `component` (a key of `adapter_components`) when
        `adapter.target_modules` is empty."""

    def adapter_components(self, text_encoders: bool = False) -> dict[str, torch.nn.Module]:
        """Networks that carry the adapter, by the name their keys are prefixed with in diffusers-style
        files ("unet", "text_encoder", ...). The first one is `trainable_module()`."""
        return {"model": self.trainable_module()}

    def attention_scopes(self) -> dict[str, str]:
        """Regex of the parent module of self- and cross-attention projections (`adapter.attention_type`)."""
        return {}

    def conv_targets(self) -> list[str]:
        """Convolution layers LoCon-style adapters add when `adapter.conv_rank` > 0."""
        return []

    def kohya_metadata(self) -> dict[str, str]:
        """`ss_*` / `modelspec.*` header entries of the kohya file (base model, resolution, ...)."""
        return {}

    def kohya_unsupported(self, component: str, modules: list[str]) -> str:
        """Why PEFT LoRA on these module paths of `component` cannot go into the kohya file ('' = it can),
        e.g. layers the ecosystem's reader of that layout does not map. The export then says so."""
        return ""

    def single_file_tensors(self, handle, states: dict) -> dict | None:
        """The single file's tensors where the family's ComfyUI layout is not kohya keys (Anima); None = the
        kohya keys `formats.peft_to_kohya` writes. Raise `formats.UnsupportedExport` for what it cannot hold."""
        return None

    # ---- caching images (data kind "images": studio/data/image_cache.py) ------------------------------
    @property
    def vae_dtype(self) -> torch.dtype:
        """dtype the VAE encodes in (cached latents are tagged with it)."""
        return self.dtype

    def cache_identity(self, part: str) -> str:
        """Short hash of the weights that encode `part` ("latents" or "text"): a cache made by other
        weights is stale."""
        raise NotImplementedError(f"{type(self).__name__} does not cache images")

    def place_encoders(self, vae: bool, text: bool) -> None:
        """Move the VAE / text encoders to the device (True) or keep them in CPU memory (False)."""
        raise NotImplementedError(f"{type(self).__name__} does not cache images")

    def encode_images(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, C, H/f, W/f) on the CPU side of the cache."""
        raise NotImplementedError(f"{type(self).__name__} does not cache images")

    def encode_text(self, captions: list[str], encoders: list | None = None) -> dict[str, torch.Tensor]:
        """Captions -> the conditioning tensors `loss` reads (name -> (B, ...))."""
        raise NotImplementedError(f"{type(self).__name__} does not cache captions")

    # ---- caching songs (data kind "songs": studio/data/audio_preprocess.py) ---------------------------
    def load_encoders(self) -> None:
        """Load only what encodes songs (VAE, text/lyrics encoders): preprocessing needs no trainer."""
        raise NotImplementedError(f"{type(self).__name__} does not cache songs")

    def audio_format(self):
        """The `studio.data.audio.AudioFormat` songs are decoded to (sample rate, channels, length limits)."""
        raise NotImplementedError(f"{type(self).__name__} does not cache songs")

    def encoder_identity(self) -> str:
        """Short hash of the song encoders' weights: a cache made by other weights is stale."""
        raise NotImplementedError(f"{type(self).__name__} does not cache songs")

    def encode_song(self, audio, caption: str, lyrics: str, meta: dict, seconds: float) -> dict:
        """One song (float32 numpy (channels, samples)) -> its cached tensors (latents, conditions)."""
        raise NotImplementedError(f"{type(self).__name__} does not cache songs")

    # ---- sampling -------------------------------------------------------------------------------------
    @abstractmethod
    def sample(self, prompts: list, step: int) -> list[Sample]:
        """Generate one sample per prompt with the current (adapted) weights."""

    # ---- saving and export verification (studio/adapters/export.py, verify.py) -------------------------
    lora_loader_name: str = ""  # how export checks name `load_lora_file` (e.g. "diffusers load_lora_weights")

    @abstractmethod
    def save_adapter(self, out_dir: Path, state_dict: dict[str, torch.Tensor], adapter_config) -> None:
        """Write `adapter_model.safetensors` (+ `adapter_config.json`) loadable by the ecosystem's loader.
        Families whose `adapter_components` include text encoders also get `text_encoder_states`
        (component -> (state dict, PEFT config))."""

    def load_base_components(self, path: str | None = None) -> dict[str, torch.nn.Module]:
        """Fresh frozen copies of `adapter_components()` loaded from `path` (default: the base model),
        on this family's device and dtype; used to load exported files back for verification."""
        raise NotImplementedError(f"{type(self).__name__} cannot reload its networks for export checks")

    def verification_inputs(self) -> dict:
        """A small fixed (seeded) input for `verification_forward`."""
        raise NotImplementedError(f"{type(self).__name__} has no fixed input for export checks")

    def verification_forward(self, components: dict[str, torch.nn.Module], inputs: dict,
                             dtype: torch.dtype) -> torch.Tensor:
        """The family's output for `inputs` through `components` (e.g. UNet noise prediction), computed
        in `dtype` (export checks run in fp32 whatever the training precision)."""
        raise NotImplementedError(f"{type(self).__name__} has no forward for export checks")

    def load_lora_file(self, components: dict[str, torch.nn.Module], file: Path) -> list[str]:
        """Load a LoRA/DoRA file (PEFT or kohya keys) into `components` with the ecosystem's own loader
        (diffusers `load_lora_weights`, PEFT); returns the loader's warnings (unused or missing keys)."""
        raise NotImplementedError(f"{type(self).__name__} has no ecosystem LoRA loader")

    def save_merged(self, out_dir: Path, components: dict[str, torch.nn.Module]) -> None:
        """Write a complete model folder (diffusers or transformers layout) made with `components`."""
        raise NotImplementedError(f"{type(self).__name__} cannot write a merged model")

    # ---- estimate (python -m studio estimate) ----------------------------------------------------------
    def estimate_candidates(self) -> list[str]:
        """Module names the estimate job ranks by gradient norm. Default: every Linear of the network."""
        return [n for n, m in self.trainable_module().named_modules() if n and isinstance(m, torch.nn.Linear)]
