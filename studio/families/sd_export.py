"""SD 1.5 / SDXL side of adapters: which networks carry them, kohya names, and what export checks need
(fresh networks, a fixed UNet input, diffusers' own LoRA loader, a merged pipeline folder).

Mixed into `SdFamily`; everything here reads the family's loaded parts (`unet`, `text_encoders`, ...).
"""
from __future__ import annotations

from pathlib import Path

import torch

from studio.adapters.loader_warnings import capture_loader_warnings

# Model spec architecture ids (Stability's sai-model-spec, read by ComfyUI / civitai) per family.
_ARCHITECTURE = {"sd15": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base"}
_BASE_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}


# The networks a single SD / SDXL checkpoint may hold, with the key prefix that shows it does (the LDM
# layout's); one it lacks comes from model.extras_path. (SD 1.5's CLIP and SDXL's CLIP-L share a slot.)
_SINGLE_FILE_PARTS = (("vae", ("diffusers", "AutoencoderKL"), "first_stage_model."),
                      ("text_encoder", ("transformers", "CLIPTextModel"), ("cond_stage_model.", "conditioner.embedders.0.")),
                      ("text_encoder_2", ("transformers", "CLIPTextModelWithProjection"), "conditioner.embedders.1."))


class SdExportMixin:
    lora_loader_name = "diffusers load_lora_weights"  # how export checks name `load_lora_file`
    @property
    def kohya_prefixes(self) -> dict[str, str]:
        # kohya's names: SD 1.x text encoder `lora_te`, SDXL's two `lora_te1` / `lora_te2`, and CLIP layers
        # named from `text_model.` (transformers 4's layout; transformers 5 dropped that level, so it is
        # put back here for ComfyUI / A1111 to recognise the keys).
        inner = "" if hasattr(self.text_encoders[0], "text_model") else "_text_model"
        return {"unet": "lora_unet", "text_encoder": ("lora_te1" if self.is_xl else "lora_te") + inner,
                "text_encoder_2": "lora_te2" + inner}

    def default_targets(self, component: str = "unet") -> list[str]:
        if component.startswith("text_encoder"):
            return ["q_proj", "k_proj", "v_proj", "out_proj"]  # CLIP attention projections
        return ["to_q", "to_k", "to_v", "to_out.0"]

    def adapter_components(self, text_encoders: bool = False) -> dict[str, torch.nn.Module]:
        out = {"unet": self.unet}
        if text_encoders:
            # Trained encoders run every step (cached embeddings are ignored): keep them on the device.
            vae_on_device = getattr(self, "encoders_on_device", (True, True))[0]
            self.place_encoders(vae=vae_on_device, text=True)
            for i, encoder in enumerate(self.text_encoders):
                out["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = encoder
        return out

    def attention_scopes(self) -> dict[str, str]:
        # diffusers' BasicTransformerBlock: attn1 attends to the image itself, attn2 to the prompt
        return {"self": "attn1", "cross": "attn2"}

    def conv_targets(self) -> list[str]:
        # kohya's LoCon set: ResNet convolutions and the down/up-sampling convolutions
        return ["conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv"]

    def kohya_metadata(self) -> dict[str, str]:
        family = self.cfg.model.family
        res = self.cfg.data.resolution
        return {"ss_base_model_version": _BASE_VERSION[family], "ss_v2": "False",
                "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": f"{_ARCHITECTURE[family]}/lora",
                "modelspec.implementation": "diffusers", "modelspec.resolution": f"{res}x{res}",
                "modelspec.title": self.cfg.job.name or "adapter"}

    # ---- export checks ---------------------------------------------------------------------------
    def load_base_components(self, path: str | None = None) -> dict[str, torch.nn.Module]:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        from studio.families.paths import resolve_model_path
        from studio.families.quantize import diffusers_load_options, place_network

        src = str(path or resolve_model_path(self.cfg.model.path))
        with_te = self.cfg.adapter.train_text_encoder or path is not None
        if src.endswith(".safetensors"):
            pipe = self._single_file_pipeline(src, self.dtype)
            out = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
            if self.is_xl:
                out["text_encoder_2"] = pipe.text_encoder_2
        else:
            kw = {"torch_dtype": self.dtype}
            if not path:
                kw.update(revision=self.cfg.model.revision or None, variant=self.cfg.model.weight_variant or None)
            # The trained base quantized as in training (model.quantization): the check compares like with like.
            quant = diffusers_load_options(self.cfg, self.device, self.dtype) if not path else {}
            out = {"unet": UNet2DConditionModel.from_pretrained(src, subfolder="unet", **kw, **quant)}
            if with_te:
                out["text_encoder"] = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", **kw)
                if self.is_xl:
                    out["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
                        src, subfolder="text_encoder_2", **kw)
        if not with_te:
            out = {"unet": out["unet"]}
        for module in out.values():
            module.requires_grad_(False)
            module.eval()
            place_network(module, self.device, module.dtype)
        return out

    def _single_file_pipeline(self, path: str, dtype: torch.dtype):
        """The pipeline of a single checkpoint file, read by diffusers' `from_single_file`; with
        `model.extras_path` its config (and the VAE / text encoders the file lacks) come from that folder."""
        import diffusers
        import transformers

        from studio.config.single_file import header
        from studio.families.paths import resolve_model_path

        cls = diffusers.StableDiffusionXLPipeline if self.is_xl else diffusers.StableDiffusionPipeline
        options, extras = {"torch_dtype": dtype}, self.cfg.model.extras_path.strip()
        if extras:
            options["config"] = base = resolve_model_path(extras)
            keys = header(path)
            for part, (library, name), prefix in _SINGLE_FILE_PARTS[:3 if self.is_xl else 2]:
                if not any(k.startswith(prefix) for k in keys):  # not in the checkpoint: the folder's
                    lib = diffusers if library == "diffusers" else transformers
                    precision = {"torch_dtype" if lib is diffusers else "dtype": dtype}
                    options[part] = getattr(lib, name).from_pretrained(base, subfolder=part, **precision)
        try:
            return cls.from_single_file(path, **options)
        except Exception as err:  # noqa: BLE001 - diffusers' SingleFileComponentError and its download errors
            field = "model.extras_path" if extras else "model.path"
            raise ValueError(f"{field}: {Path(path).name} could not be read as a {cls.__name__} checkpoint"
                             f"{' with the parts of ' + extras if extras else ''} ({str(err).splitlines()[0][:200]})"
                             + ("" if extras else "; a checkpoint without its VAE or text encoders, or a machine "
                                "offline, needs model.extras_path (the diffusers folder of that model)")) from None

    def verification_inputs(self) -> dict:
        gen = torch.Generator().manual_seed(20240601)
        # (1, 4, 8, 8) latents: small enough for any UNet depth (8 -> 4 -> 2 -> 1), fast on a CPU.
        latents = torch.randn(1, self.unet.config.in_channels, 8, 8, generator=gen)
        return {"latents": latents, "timestep": torch.tensor([499]), "caption": ["a photo of a red fox, studio light"]}

    @torch.no_grad()
    def verification_forward(self, components: dict[str, torch.nn.Module], inputs: dict,
                             dtype: torch.dtype) -> torch.Tensor:
        """UNet noise prediction (1, 4, 8, 8) for the fixed input, text encoded by `components`' encoders."""
        encoders = [components.get("text_encoder", self.text_encoders[0])]
        if self.is_xl:
            encoders.append(components.get("text_encoder_2", self.text_encoders[1]))
        devices = [next(e.parameters()).device for e in encoders]
        for encoder in encoders:
            encoder.to(self.device)
        try:
            text = self.encode_text(inputs["caption"], encoders=encoders)
        finally:
            for encoder, device in zip(encoders, devices):
                encoder.to(device)
        unet = components.get("unet", self.unet)
        latents = inputs["latents"].to(self.device, dtype)
        out = unet(latents, inputs["timestep"].to(self.device), text["prompt_embeds"].to(self.device, dtype),
                   added_cond_kwargs=self._added_cond({}, text, 1, dtype)).sample
        return out.float().cpu()

    def load_lora_file(self, components: dict[str, torch.nn.Module], file: Path) -> list[str]:
        """diffusers' `load_lora_weights` (PEFT or kohya keys) into a pipeline built on `components`."""
        pipe = self.pipeline(components)
        with capture_loader_warnings("diffusers", "transformers") as messages:  # text encoders: transformers
            pipe.load_lora_weights(str(Path(file).parent), weight_name=Path(file).name, adapter_name="exported")
        return messages

    def save_merged(self, out_dir: Path, components: dict[str, torch.nn.Module]) -> None:
        self.pipeline(components).save_pretrained(str(out_dir), safe_serialization=True)
        for folder in ("text_encoder", "text_encoder_2"):
            if (Path(out_dir) / folder).is_dir():
                with_text_model_level(Path(out_dir) / folder)


CLIP_LEVEL = "text_model."


def with_text_model_level(folder: Path) -> None:
    """transformers 5 saves CLIPTextModel without its `text_model.` key level; ComfyUI's diffusers-folder
    loader (comfy/diffusers_load.py -> comfy.sd.load_clip) recognises a CLIP text encoder only by keys such
    as `text_model.encoder.layers.1.mlp.fc1.weight`. Put the level back in every weight file (and the shard
    index); transformers' `from_pretrained` reads both layouts to the same weights. `text_projection`
    (CLIPTextModelWithProjection) stays at the top, where both expect it."""
    import json

    from safetensors import safe_open

    from studio.adapters.formats import atomic_save_file

    def renamed(key: str) -> str:
        return key if key.startswith((CLIP_LEVEL, "text_projection")) else CLIP_LEVEL + key

    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {renamed(k): f.get_tensor(k) for k in f.keys()}
        atomic_save_file(tensors, file, metadata)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        info = json.loads(index.read_text(encoding="utf-8"))
        info["weight_map"] = {renamed(k): v for k, v in info.get("weight_map", {}).items()}
        index.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")

