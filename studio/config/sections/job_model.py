"""`job` and `model` sections (FIELDS §1, §2)."""
from __future__ import annotations

from typing import Literal

from studio.config.fields import ALL_FAMILIES, TRAINABLE_FAMILIES, IMAGE_FAMILIES, Section, setting
from studio.config.single_file import names_single_file
from studio.registry.families import FAMILIES, family_ids

# Families whose frozen base can load quantized (diffusers / transformers quantization configs).
QUANTIZABLE_FAMILIES = (*IMAGE_FAMILIES, *family_ids(data="text"))

Family = Literal[ALL_FAMILIES]  # the family registry's ids


class JobSection(Section):
    name: str = setting("", "Job name shown in the queue and used for the run folder. Leave empty for "
                        "an automatic `{family}_{YYYYMMDD_HHMMSS}` name. Must be unique in the queue.")
    run_name: str = setting("", "Free label for your own bookkeeping (artist, experiment, version). It does "
                            "not change training; it is shown in the queue and TensorBoard.", group="advanced")
    output_dir: str = setting("", "Run folder: adapter, checkpoints, logs and samples go here. Empty means "
                              "`STUDIO_HOME/runs/<job name>`. Created if missing.", widget="path")
    env_file: str = setting("", "A file of environment variables for this job, one `KEY=VALUE` a line (`#` "
                            "comments allowed), e.g. `HF_HOME=/big/disk/hf` or `HF_TOKEN=...`. They are set "
                            "in the job's own process before any model library starts; only their names "
                            "are recorded in training_args.json. Empty = none.", group="advanced",
                            widget="path")
    overwrite: bool = setting(False, "Start afresh in a run folder that already holds a finished or stopped "
                              "run. Its adapter, checkpoints and progress log first move to "
                              "`RUN_DIR/attempts/<n>/`. Off: such a folder is refused unless "
                              "checkpointing.auto_resume continues it.", group="advanced")


class ModelSection(Section):
    family: Family = setting("sd15", "Model architecture. Decides which settings apply and how the model "
                             "is loaded, trained and sampled.")
    path: str = setting("", "Base model: a local diffusers/transformers folder, a Hugging Face hub id "
                        "(e.g. `stable-diffusion-v1-5/stable-diffusion-v1-5`), a single `.safetensors` file "
                        "(an SD/SDXL checkpoint; for SD3, Flux, Z-Image and Anima the transformer file as its "
                        "makers ship it, with model.extras_path), or `tiny:<family>` for the built-in offline "
                        "test model.",
                        widget="path")
    variant: str = setting("", "Family variant. Flux: dev (guidance-distilled, trained with its guidance "
                           "embedding) or schnell (step-distilled). ACE-Step: turbo / base / sft. Causal LM: sft "
                           "(chat fine-tuning) or pretrain (plain text). Empty for the other families.",
                           families=tuple(f for f in ALL_FAMILIES if FAMILIES[f].variants), widget="variant")
    base_variant: Literal["", "turbo", "base", "sft"] = setting(
        "", "ACE-Step fine-tune (a variant that is not turbo, base or sft): the official variant it was "
        "made from, which picks its timestep sampling and defaults. Empty = read from the model's "
        "transformer config.", families=("acestep",), group="advanced")
    revision: str = setting("", "Hub branch, tag or commit to load (hub ids only). Empty = main.",
                            group="advanced")
    weight_variant: str = setting("", "Weight variant inside a hub repo, e.g. `fp16`. Empty = the default "
                                  "weights.", group="advanced", families=IMAGE_FAMILIES)
    prediction_type: Literal["auto", "epsilon", "v_prediction"] = setting(
        "auto", "What the UNet predicts. `auto` reads it from the model's scheduler config; set "
        "`v_prediction` for v-models (SD 2.x-v and some fine-tunes) whose config does not say so.",
        group="advanced", families=family_ids(trait="unet"))
    device: Literal["auto", "cpu", "cuda", "mps"] = setting(
        "auto", "Where to train. `auto` picks CUDA, then Apple MPS, then CPU. `cuda` or `mps` insist on that "
        "device: the job stops before loading anything when it is not there, instead of running on the "
        "CPU. `cpu` trains on the CPU even when a GPU is present.", group="advanced")
    t5_model_path: str = setting(
        "", "Where to load the T5 text encoder from when it is not in the base model's folder: a local folder "
        "or hub id of a transformers T5 encoder (config.json + weights, e.g. another download's "
        "`text_encoder_2` / `text_encoder_3` folder). Lets several SD3 / Flux models share one copy of the "
        "~9.5 GB T5-XXL, or a base folder shipped without it. Its tokenizer comes from the base folder, "
        "else from this folder. Empty = the base model's own T5.", group="advanced",
        families=family_ids(trait="t5_encoder"), widget="path")
    extras_path: str = setting(
        "", "Only when model.path is a single .safetensors file: the diffusers folder or hub id that describes "
        "its network (the config) and supplies the parts the file lacks. SD3, Flux, Z-Image, Anima: the file "
        "is the transformer; VAE, text encoders, tokenizers and scheduler come from here. SD / SDXL: the "
        "checkpoint's own VAE and text encoders are used when it has them, else this folder's. Empty = the "
        "repository diffusers infers from the file (e.g. black-forest-labs/FLUX.1-dev), downloaded on first "
        "use; give a local folder to stay offline.", group="advanced", families=IMAGE_FAMILIES, widget="path")
    tokenizer_path: str = setting("", "Tokenizer folder when it differs from the model's own (custom or "
                                  "extended tokenizer). Empty = use the model's.", group="advanced",
                                  families=("causal_lm",), widget="path")
    quantization: Literal["none", "8bit", "4bit"] = setting(
        "none", "Load the frozen base model (the LLM, the UNet or the DiT transformer) in 8-bit or 4-bit to cut "
        "its memory to about a half or a quarter; the adapter trains on top in full precision (QLoRA). "
        "bitsandbytes: 8-bit (LLM.int8) or 4-bit NF4, CUDA only. torchao: 8-bit integer weights, also on the "
        "CPU. Adapter LoRA only; no merged export. `none` keeps full weights.",
        group="advanced", families=QUANTIZABLE_FAMILIES)
    quantization_backend: Literal["bitsandbytes", "torchao"] = setting(
        "bitsandbytes", "Library that quantizes the base (model.quantization). bitsandbytes: 8-bit and 4-bit "
        "NF4, needs a CUDA GPU, the usual QLoRA choice. torchao: 8-bit integer weights (image families), "
        "runs on the CPU too; PEFT cannot train LoRA over torchao's 4-bit weights. (quanto is not offered: "
        "diffusers has deprecated it and it is not installed.)", group="advanced", families=QUANTIZABLE_FAMILIES)
    fp8_base: bool = setting(
        False, "Hold the frozen UNet / transformer weights in float8 (torchao) to save about half their memory "
        "with less loss than 8-bit integers. Needs an NVIDIA GPU with float8 support (Ada, Hopper or newer); "
        "refused on the CPU. Not together with model.quantization.", group="advanced", families=IMAGE_FAMILIES)
    quantize_via: Literal["auto", "cpu", "accelerator"] = setting(
        "auto", "Where torchao quantizes the weights while the model loads (model.fp8_base, or "
        "model.quantization with torchao). cpu: in system RAM, then the small result moves to the GPU "
        "(slower start, lowest VRAM peak). accelerator: on the GPU as each weight arrives (faster, but the "
        "full-precision weights pass through VRAM, which can run out on 24 GB with Flux-sized models). auto: "
        "cpu. bitsandbytes always quantizes on the GPU.", group="advanced", families=IMAGE_FAMILIES)

    def problems(self, cfg) -> list[tuple[str, str]]:
        out = []
        if self.family not in TRAINABLE_FAMILIES:
            out.append(("model.family", f"training '{self.family}' is not available yet; trainable families: "
                        + ", ".join(TRAINABLE_FAMILIES)))
        if self.path.startswith("tiny:") and self.path[5:] not in ALL_FAMILIES:
            out.append(("model.path", f"unknown tiny model {self.path!r}; use one of "
                        + ", ".join(f"tiny:{f}" for f in ALL_FAMILIES)))
        elif self.path.lower().endswith(".gguf"):
            out.append(("model.path", "a .gguf file is an inference-only format and cannot be trained; "
                        "point to the original Hugging Face model folder (config.json + .safetensors)"))
        if self.extras_path.strip() and not names_single_file(self.path):
            out.append(("model.extras_path", "is used only when model.path is a single .safetensors file; a "
                        "folder or hub id brings its own parts: leave it empty"))
        return out + self._quantization_problems(cfg)

    def _quantization_problems(self, cfg) -> list[tuple[str, str]]:
        """How a quantized base (model.quantization / fp8_base) fits the family and the adapter."""
        out, field = [], "model.fp8_base" if self.fp8_base else "model.quantization"
        if self.quantization != "none" and self.family not in QUANTIZABLE_FAMILIES:
            return [("model.quantization", f"'{self.family}' cannot load a quantized base; families that can: "
                     + ", ".join(QUANTIZABLE_FAMILIES) + ". Set 'none'")]
        if self.fp8_base and self.quantization != "none":
            out.append(("model.fp8_base", "choose float8 weights or model.quantization, not both"))
        if self.quantization == "none" and not self.fp8_base:
            return out
        if self.quantization_backend == "torchao" and self.family not in IMAGE_FAMILIES and self.quantization != "none":
            out.append(("model.quantization_backend", f"{self.family} loads its quantized base through "
                        "bitsandbytes only (torchao is wired for the image families); choose 'bitsandbytes'"))
        if self.quantization_backend == "torchao" and self.quantization == "4bit":
            out.append(("model.quantization", "torchao's 4-bit weights cannot carry a trained LoRA (PEFT trains "
                        "on its 8-bit ones only); choose '8bit' or model.quantization_backend 'bitsandbytes'"))
        if (self.quantize_via == "cpu" and self.quantization != "none" and not self.fp8_base
                and self.quantization_backend == "bitsandbytes"):
            out.append(("model.quantize_via", "bitsandbytes quantizes on the GPU as the weights load; 'cpu' "
                        "applies to torchao (model.quantization_backend 'torchao' or model.fp8_base). Use 'auto'"))
        if cfg.adapter.type == "full":
            out.append((field, "a quantized base cannot be fully fine-tuned: use a LoRA adapter (QLoRA) or "
                        "load full weights"))
        elif self.family in IMAGE_FAMILIES and (cfg.adapter.type != "lora" or cfg.adapter.backend == "lycoris"):
            out.append((field, f"on a quantized UNet / transformer only PEFT's LoRA trains (adapter.type 'lora', "
                        f"backend 'auto' or 'peft'); got {cfg.adapter.type} / {cfg.adapter.backend}"))
        if cfg.adapter.merge_after_training:
            out.append(("adapter.merge_after_training", "cannot fold an adapter into a 4/8-bit base: turn it "
                        "off and merge the saved adapter into the full-precision model afterwards"))
        return out
