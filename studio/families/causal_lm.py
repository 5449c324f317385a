"""Causal language models (Llama, Qwen, Mistral, ...) through transformers: SFT on chat JSONL and
pretraining on plain text (`model.variant` "sft" / "pretrain"), trained the way TRL's `SFTTrainer` and
transformers' `run_clm.py` do: next-token cross-entropy, labels -100 where no loss is wanted.

The adapter is saved in PEFT's layout (`PeftModel.from_pretrained(base, run_dir)` loads it) with the
tokenizer beside it, so the chat template used in training travels with the adapter.
"""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import torch

from studio.families.base import ModelFamily, Sample
from studio.families.causal_lm_export import CausalLmExportMixin
from studio.families.causal_lm_source import ModelSourceError, check_model_source, quantization_config  # noqa: F401
from studio.families.paths import resolve_model_path
from studio.families.rng import on_device

log = logging.getLogger("studio.families.causal_lm")


class CausalLmFamily(CausalLmExportMixin, ModelFamily):
    kind = "text"

    @property
    def variant(self) -> str:
        return self.cfg.model.variant or "sft"

    # ---- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        self.model_path = resolve_model_path(self.cfg.model.path)
        check_model_source(self.model_path)
        self.tokenizer = self._load_tokenizer()
        self.model = self._load_model()
        embeddings = self.model.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > embeddings:
            raise ModelSourceError(f"model.tokenizer_path: the tokenizer has {len(self.tokenizer)} tokens but the "
                                   f"model only {embeddings} embeddings; use the model's own tokenizer")
        self.model.requires_grad_(False)
        self.model.config.use_cache = False  # caches only cost memory while training
        if self.cfg.model.quantization == "none":
            self.model.to(self.device)

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        source, field, revision = self.model_path, "model.path", self.cfg.model.revision or None
        if self.cfg.model.tokenizer_path:
            source, field, revision = resolve_model_path(self.cfg.model.tokenizer_path), "model.tokenizer_path", None
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as err:
            reason = " ".join(str(err).split())[:240]  # transformers' message spans several lines
            raise ModelSourceError(f"{field}: no usable tokenizer in {source}; set model.tokenizer_path to a "
                                   f"folder holding tokenizer.json / tokenizer_config.json ({reason})") from None
        if self.variant == "sft" and not tokenizer.chat_template:
            from studio.data.chat import CHAT_TEMPLATES

            name = self.cfg.data.chat_template_fallback
            tokenizer.chat_template = CHAT_TEMPLATES[name]
            self.cfg.notes.append(f"the tokenizer has no chat template: conversations use the '{name}' "
                                  "format (data.chat_template_fallback)")
        return tokenizer

    def _load_model(self):
        from transformers import AutoModelForCausalLM

        kwargs = {"revision": self.cfg.model.revision or None, "dtype": self.dtype}
        if not Path(self.model_path).exists():
            kwargs["use_safetensors"] = True  # hub id: never unpickle downloaded weights
        bnb = quantization_config(self.cfg, self.device, self.dtype)
        if bnb is not None:
            kwargs.update(quantization_config=bnb, device_map={"": self.device.index or 0})
        try:
            model = AutoModelForCausalLM.from_pretrained(self.model_path, **kwargs)
        except ValueError as err:  # e.g. "Unrecognized configuration class" for an encoder-only model
            raise ModelSourceError(f"model.path: {self.cfg.model.path} is not a causal language model that "
                                   f"transformers can train ({err})") from None
        except OSError as err:
            raise ModelSourceError(f"model.path: could not load {self.cfg.model.path}: {err}") from None
        if self.cfg.memory.liger_kernels:  # transformers' own entry to Liger (as its Trainer's use_liger_kernel)
            from transformers.integrations.liger import apply_liger_kernel

            apply_liger_kernel(model, None)
        if bnb is not None:
            from peft import prepare_model_for_kbit_training

            from studio.config.vram_fit import checkpointing_for

            # Casts norms to fp32 and lets gradients reach the adapters through the frozen 4/8-bit base.
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=checkpointing_for(self.cfg)[0],
                gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    def trainable_module(self) -> torch.nn.Module:
        return self.model

    def use_flash_attn(self) -> None:
        self.model.set_attn_implementation("flash_attention_2")

    def gradient_checkpointing(self) -> None:
        # Non-reentrant checkpointing lets gradients reach adapters even though the embeddings are frozen.
        self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ---- data ------------------------------------------------------------------------------------
    def train_dataset(self, split: str = "train"):
        from studio.data.chat import build_chat_dataset
        from studio.data.text_corpus import build_text_dataset

        build = build_chat_dataset if self.variant == "sft" else build_text_dataset
        dataset = build(self.cfg, self.tokenizer, split)
        if dataset.truncated:
            log.warning("%s", dataset.report)
            self.cfg.notes.append(dataset.report)
        return dataset

    def collate(self, items: list[dict]) -> dict:
        from studio.data.chat import IGNORE_INDEX, collate_causal

        if self.cfg.data.packing:
            # transformers' padding-free collator: one row, position ids restarting per example (its masks
            # keep examples apart), the first label of each example ignored (no loss across a boundary).
            from transformers import DataCollatorWithFlattening

            return DataCollatorWithFlattening(separator_id=IGNORE_INDEX)(items)
        pad = self.tokenizer.pad_token_id
        return collate_causal(items, pad if pad is not None else self.tokenizer.eos_token_id)

    # ---- training --------------------------------------------------------------------------------
    def loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled tokens of the batch (B, T)."""
        batch = {k: on_device(v, self.device) for k, v in batch.items()}
        return self.model(**batch, use_cache=False).loss

    def loss_weight(self, batch: dict) -> int:
        """The tokens `loss` averages over (labels after the one-token shift, ignored ones left out): the eval
        loss is then the mean over every held-out token, the same padded or packed (a packed row holds
        several examples) and for any batch size."""
        from studio.data.chat import IGNORE_INDEX

        return int((batch["labels"][..., 1:] != IGNORE_INDEX).sum())

    def eval_metrics(self, loss: float) -> dict:
        return {"perplexity": round(math.exp(min(loss, 50.0)), 4)}  # capped: exp overflows past ~709

    # ---- sampling ------------------------------------------------------------------------------
    def format_prompt(self, prompt: str) -> str:
        if self.variant == "pretrain":
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def stop_token_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    @torch.no_grad()
    def sample(self, prompts: list, step: int) -> list[Sample]:
        sampling, out = self.cfg.sampling, []
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        for p in prompts:
            enc = self.tokenizer(self.format_prompt(p.prompt), return_tensors="pt", add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            options = {"max_new_tokens": sampling.max_new_tokens, "do_sample": sampling.temperature > 0,
                       "pad_token_id": pad, "eos_token_id": self.stop_token_ids(), "use_cache": True}
            if sampling.temperature > 0:
                options["temperature"] = sampling.temperature
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # the training RNG stream stays untouched
                torch.manual_seed(p.seed)
                ids = self.model.generate(**enc, **options)
            new_tokens = ids[0, enc["input_ids"].shape[1]:]
            completion = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
            meta = {"prompt": p.prompt, "seed": p.seed, "max_new_tokens": sampling.max_new_tokens,
                    "temperature": sampling.temperature, "new_tokens": int(new_tokens.numel()),
                    "chat_template": self.variant == "sft", "step": step}
            out.append(Sample(completion, "text", meta))
        return out

    # ---- saving and export ----------------------------------------------------------------------
    def save_adapter(self, out_dir: Path, state_dict: dict[str, torch.Tensor], adapter_config) -> None:
        """PEFT's layout, as `PeftModel.save_pretrained` writes it: `base_model.model.<module>.lora_A.weight`
        keys + `adapter_config.json` (task type CAUSAL_LM, the base named), and the tokenizer beside them
        so the chat template used in training travels with the adapter."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(adapter_config)
        config.task_type = "CAUSAL_LM"  # PeftModel.from_pretrained then returns a PeftModelForCausalLM
        config.base_model_name_or_path = self.base_reference()
        config.inference_mode = True
        tensors = {f"base_model.model.{k}": v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(str(out_dir))
        self.tokenizer.save_pretrained(str(out_dir))
