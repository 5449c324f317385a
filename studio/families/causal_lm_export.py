"""Causal LM side of adapters and exports: what the export checks need (a fresh base, a fixed token
input, PEFT's own loader) and the merged transformers folder.

Mixed into `CausalLmFamily`; reads the family's loaded `model`, `tokenizer` and `model_path`.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

PROBE_TEXT = "The quick brown fox jumps over the lazy dog. What colour is the sky?"


class CausalLmExportMixin:
    lora_loader_name = "peft PeftModel.from_pretrained"  # how export checks name `load_lora_file`

    def default_targets(self, component: str = "model") -> list[str]:
        """q_proj + v_proj (FIELDS §22, the LoRA paper's choice); models with other layer names (GPT-2's
        `c_attn`, Falcon's `query_key_value`) get every linear layer except the output head."""
        from transformers.pytorch_utils import Conv1D

        leaves = {name.rsplit(".", 1)[-1] for name, _ in self.model.named_modules()}
        wanted = [name for name in ("q_proj", "v_proj") if name in leaves]
        if wanted:
            return wanted
        return sorted({name.rsplit(".", 1)[-1] for name, module in self.model.named_modules()
                       if isinstance(module, (torch.nn.Linear, Conv1D)) and not name.endswith("lm_head")})

    def base_reference(self) -> str:
        """What `adapter_config.json` names as the base: the local folder, or the hub id."""
        return self.model_path if Path(self.model_path).exists() else self.cfg.model.path

    def load_base(self, path: str | None = None, dtype=None, quantized: bool = True):
        """A fresh, frozen, unadapted copy of the base model (or of the transformers folder `path`).
        `quantized`: as in training (`model.quantization`), so export checks compare like with like."""
        from transformers import AutoModelForCausalLM

        from studio.families.causal_lm_source import quantization_config

        src = str(path or self.model_path)
        kwargs = {} if Path(src).exists() else {"use_safetensors": True, "revision": self.cfg.model.revision or None}
        bnb = quantization_config(self.cfg, self.device, self.dtype) if (path is None and quantized) else None
        if bnb is not None:
            kwargs.update(quantization_config=bnb, device_map={"": self.device.index or 0})
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype or self.dtype, **kwargs)
        model.requires_grad_(False)
        return model.eval() if bnb is not None else model.eval().to(self.device)

    # ---- hooks of studio/adapters (export checks and merging) ------------------------------------
    def load_base_components(self, path: str | None = None) -> dict[str, torch.nn.Module]:
        return {"model": self.load_base(path)}

    def verification_inputs(self) -> dict:
        ids = self.tokenizer(PROBE_TEXT, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return {"input_ids": ids}  # (1, T)

    @torch.no_grad()
    def verification_forward(self, components: dict[str, torch.nn.Module], inputs: dict,
                             dtype: torch.dtype) -> torch.Tensor:
        """Next-token logits (1, T, vocab) of the probe text through `components["model"]`."""
        model = components.get("model", self.model)
        return model(input_ids=inputs["input_ids"].to(self.device), use_cache=False).logits.float().cpu()

    def load_lora_file(self, components: dict[str, torch.nn.Module], file: Path) -> list[str]:
        """`PeftModel.from_pretrained(base, folder)`, exactly as a user loads the adapter; returns what PEFT
        warned about (e.g. keys it could not place). The PEFT wrapper replaces `components["model"]`."""
        from peft import PeftModel

        folder = Path(file).parent
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            components["model"] = PeftModel.from_pretrained(components["model"], str(folder)).eval()
        return [str(w.message) for w in caught if "key" in str(w.message).lower()]

    def save_merged(self, out_dir: Path, components: dict[str, torch.nn.Module]) -> None:
        """A plain transformers folder (`AutoModelForCausalLM.from_pretrained(out_dir)`) + the tokenizer."""
        model = components["model"]
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            raise ValueError("merged export: the base is loaded quantized (model.quantization), and folding an "
                             "adapter into 4/8-bit weights loses precision; merge the saved adapter into a "
                             "full-precision copy (PeftModel.from_pretrained(base, run_dir).merge_and_unload())")
        if hasattr(model, "merge_and_unload"):  # a PeftModel (from load_lora_file)
            model = model.merge_and_unload()
        model.config.use_cache = True  # training switched it off; generation wants it
        model.save_pretrained(str(out_dir))
        self.tokenizer.save_pretrained(str(out_dir))

    def merge_adapter(self, adapter_dir: Path, out_dir: Path) -> Path:
        """Fold the PEFT adapter of `adapter_dir` into a fresh full-precision base copy (also after QLoRA)
        and write `out_dir`."""
        components = {"model": self.load_base(quantized=False)}
        self.load_lora_file(components, Path(adapter_dir) / "adapter_model.safetensors")
        self.save_merged(Path(out_dir), components)
        return Path(out_dir)
