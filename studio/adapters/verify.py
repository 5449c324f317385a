"""Check an exported file by loading it back the way its users will, then comparing outputs.

Loader per file: diffusers' `load_lora_weights` (via `family.load_lora_file`) for LoRA/DoRA files, PEFT
or kohya keys; PEFT's own injection for PEFT's other methods; LyCORIS' `create_lycoris_from_weights`
for LyCORIS files and kohya LoHa/LoKr (ComfyUI follows LyCORIS' format); `from_pretrained` (through
`family.load_base_components`) for a merged model folder. The loaded network gets the family's fixed
input (`verification_inputs` / `verification_forward`) and its output is compared with the trained
model's. The error is measured against the adapter's own effect (trained - base output): a file that
silently dropped layers fails even when the adapter changes the output only a little.
"""
from __future__ import annotations

import itertools
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from studio.adapters import formats, lycoris_backend, peft_backend
from studio.adapters.formats import CONFIG_FILE
from studio.config.kv import parse_key_values

# The check runs in fp32 whatever the training precision: half-precision base weights are upcast (exactly)
# on both sides, so an adapter file must reproduce the trained output to float32 noise. Allowed error:
# 1e-3 of the adapter's effect, above a noise floor (share of the output) set by the storage precision
# (only a merged model stores rounded weights).
EFFECT_TOL = 1e-3
NOISE_FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
HALF = (torch.float16, torch.bfloat16)
LORA_PARAMS = ("lora_down.weight", "lora_up.weight", "alpha", "dora_scale", "lora_A.weight", "lora_B.weight",
               "lora_magnitude_vector", "lora_magnitude_vector.weight", "lora.down.weight", "lora.up.weight")


@dataclass
class Reference:
    """The in-training model's output on the fixed input, with and without the adapter."""

    inputs: dict
    trained: torch.Tensor
    base: torch.Tensor


@dataclass
class CheckResult:
    path: str
    fmt: str
    loader: str
    rel_error: float | None = None  # |loaded - trained| / |trained|
    effect_error: float | None = None  # |loaded - trained| / |trained - base|
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    approximation: dict | None = None  # a re-expressed file's measured error (dora_lora.py)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = f"{self.fmt} export {self.path} via {self.loader}: " + ("OK" if self.ok else "MISMATCH")
        if self.rel_error is not None:
            head += f" (output error {self.rel_error:.2e} of the output"
            head += f", {self.effect_error:.2e} of the adapter's effect)" if self.effect_error is not None else ")"
        return "; ".join([head, *self.problems, *self.notes])

    @property
    def checked(self) -> bool:
        return self.rel_error is not None or bool(self.problems)

    def as_event(self) -> dict:
        """Fields of the `saved` progress event; `verified` is None when nothing could be compared."""
        return {"format": self.fmt, "path": self.path, "verified": self.ok if self.checked else None,
                "loader": self.loader,
                "rel_error": self.rel_error, "effect_error": self.effect_error,
                "problems": self.problems, "notes": self.notes,
                **({"approximation": self.approximation} if self.approximation is not None else {})}


@contextmanager
def full_precision(nets):
    """Upcast the half-precision tensors of `nets` to fp32 (exact) for the check (the family is told to
    compute in fp32 by `verification_forward`'s dtype); everything is put back afterwards (fp32 -> the
    original half type is exact for upcast values)."""
    tensors = {id(t): t for net in nets for t in itertools.chain(net.parameters(), net.buffers())
               if t.dtype in HALF and type(t.data) is torch.Tensor}  # quantized weights (torchao) stay as they are
    dtypes = {key: t.dtype for key, t in tensors.items()}
    for t in tensors.values():
        t.data = t.data.float()
    try:
        yield
    finally:
        for key, t in tensors.items():
            t.data = t.data.to(dtypes[key])


@contextmanager
def plain_forward(nets):
    """Without accelerate's mixed-precision wrapper: `Accelerator.prepare` replaces a network's `forward`
    by an autocast one and keeps the original as `_original_forward`; the check must run in fp32."""
    wrapped = [(net, net.__dict__["forward"]) for net in nets
               if "_original_forward" in net.__dict__ and "forward" in net.__dict__]
    for net, _ in wrapped:
        net.forward = net.__dict__["_original_forward"]
    try:
        yield
    finally:
        for net, forward in wrapped:
            net.forward = forward


def reference_outputs(handle) -> Reference:
    family = handle.family
    inputs = family.verification_inputs()
    nets = list(handle.components.values())
    with torch.no_grad(), handle.eval_mode(), full_precision(nets), plain_forward(nets):
        trained = family.verification_forward(handle.components, inputs, torch.float32)
        with handle.disabled():
            base = family.verification_forward(handle.components, inputs, torch.float32)
    return Reference(inputs, trained, base)


def check_export(handle, path: Path, fmt: str, reference: Reference) -> CheckResult:
    """Load `path` (an adapter folder for `peft`, a file for `kohya`, a model folder for `merged`) into
    fresh networks and compare with `reference`."""
    family, path = handle.family, Path(path)
    file = path / formats.ADAPTER_FILE if fmt == "peft" else path
    loader = loader_for(handle, fmt, file)
    label = LOADER_LABELS.get(loader) or family.lora_loader_name
    result = CheckResult(str(path), fmt, label)
    try:
        # In the training precision (the same rounded base weights the adapter was trained on), then
        # upcast so that the adapter loads and runs in fp32.
        fresh = family.load_base_components(str(path) if fmt == "merged" else None)
    except NotImplementedError as err:
        result.notes.append(f"not checked: {err}")
        return result
    try:
        with torch.no_grad(), full_precision(fresh.values()):
            if fmt != "merged":
                result.problems += _load(handle, fresh, file, loader)
            for net in fresh.values():
                net.eval()
            out = family.verification_forward(fresh, reference.inputs, torch.float32)
    except Exception as err:  # noqa: BLE001 - a loader that refuses the file is the finding itself
        result.problems.append(f"the loader failed: {type(err).__name__}: {err}")
        return result
    _compare(result, out, reference, family.dtype if fmt == "merged" else torch.float32)
    return result


LOADER_LABELS = {"merged": "from_pretrained", "lycoris": "lycoris create_lycoris_from_weights",
                 "lycoris-rebuild": "lycoris LycorisNetwork.load_state_dict",
                 "peft": "peft set_peft_model_state_dict", "family": None}  # family: its `lora_loader_name`


def loader_for(handle, fmt: str, file: Path) -> str:
    """Which loader checks `file`: the family's LoRA loader (diffusers / PEFT's own), LyCORIS, PEFT."""
    if fmt == "merged":
        return "merged"
    keys = formats.read_header(file)[0]
    lora_shaped = all(_param(k) in LORA_PARAMS for k in keys)
    kind = "lora" if fmt == "dora_lora" else handle.kind  # a DoRA run's plain-LoRA re-expression
    # diffusers drops kohya `dora_scale` keys on SD/SDXL (lora_pipeline.py `lora_state_dict` filters them
    # with a warning), so a kohya DoRA file is checked with LyCORIS, whose reading ComfyUI and A1111 share.
    kohya_keys = fmt in ("kohya", "dora_lora") or handle.impl.KOHYA_KEYS
    diffusers_kinds = ("lora", "locon", "dylora") if kohya_keys else ("lora", "dora")
    family_reads_it = _has_lora_loader(handle.family) and (handle.family.kohya_prefixes or not kohya_keys)
    if lora_shaped and kind in diffusers_kinds and family_reads_it:
        return "family"
    if handle.impl.KOHYA_KEYS and handle.kind == "ia3":
        return "lycoris-rebuild"
    if kohya_keys:
        return "lycoris"
    return "peft"


def _param(key: str) -> str:
    """The parameter part of a key: `lora_A.weight`, `alpha`, or `lora.down.weight` (Z-Image's ComfyUI file)."""
    parts = key.split(".")
    if parts[-1] != "weight":
        return parts[-1]
    return ".".join(parts[-3:] if len(parts) > 2 and parts[-3] == "lora" else parts[-2:])


def _has_lora_loader(family) -> bool:
    """A family with an ecosystem loader names it (`lora_loader_name`) and implements `load_lora_file`."""
    return bool(family.lora_loader_name)


def _load(handle, fresh: dict, file: Path, loader: str) -> list[str]:
    if loader == "family":
        warnings = handle.family.load_lora_file(fresh, file)
        return [f"loader: {w}" for w in warnings if _is_key_warning(w, handle.components)]
    if loader.startswith("lycoris"):
        return _load_lycoris(handle, fresh, file, rebuild=loader == "lycoris-rebuild")
    return _load_peft(handle, fresh, file)


def _is_key_warning(message: str, adapted: dict) -> bool:
    text = message.lower()
    empty = re.search(r"no lora keys associated to \w+ found with the prefix='(\w+)'", text)
    if empty:  # diffusers notes every network the file has no keys for: only adapted ones matter
        return empty.group(1) in adapted
    return any(word in text for word in ("unexpected", "missing", "not found", "not loaded", "skipp", "filter"))


def _load_lycoris(handle, fresh: dict, file: Path, rebuild: bool) -> list[str]:
    from studio.adapters.lycoris_backend import lycoris_prefix
    from studio.adapters.writer import split_by_prefix

    weights, _ = formats.read_safetensors(file)
    prefixes = {n: lycoris_prefix(handle.family, n) for n in handle.components}
    problems = []
    for name, sd in split_by_prefix(weights, prefixes, "file").items():
        if name not in fresh:
            problems.append(f"keys for '{name}', which the reloaded model does not have")
            continue
        if rebuild:  # LyCORIS 4.1's IA3 `make_module_from_state_dict` is broken: rebuild the network instead
            net = lycoris_backend.create(fresh[name], prefixes[name], handle.kind, handle.cfg.adapter,
                                         parse_key_values(handle.cfg.adapter.network_args),
                                         handle.targets[name].lycoris_pattern())
            missing = lycoris_backend.load_state_dict(net, sd)
            if missing:
                problems.append(f"{name}: {len(missing)} weights missing from the file, e.g. {missing[:3]}")
            continue
        net, unused = lycoris_backend.load_from_weights(fresh[name], prefixes[name], sd)
        expected = _adapted_layer_count(handle, name)
        if unused:
            problems.append(f"{len(unused)} keys of {name} were not used, e.g. {unused[:3]}")
        if len(net.loras) != expected:
            problems.append(f"{name}: {len(net.loras)} layers loaded, {expected} trained")
    return problems


def _adapted_layer_count(handle, name: str) -> int:
    return handle.impl.layer_count(handle.components[name], handle.adapters[name])


def _load_peft(handle, fresh: dict, file: Path) -> list[str]:
    from studio.adapters.writer import read_adapter_folder

    _, metadata = formats.read_header(file)
    problems = []
    for name, sd in read_adapter_folder(file, handle, field="file").items():
        config = peft_backend.config_from_dict(_peft_config_dict(file, metadata, name, name == handle.main))
        peft_backend.inject(fresh[name], config)
        missing = peft_backend.load_state_dict(fresh[name], sd)
        if missing:
            problems.append(f"{name}: {len(missing)} adapter weights missing from the file, e.g. {missing[:3]}")
    return problems


def _peft_config_dict(file: Path, metadata: dict, name: str, is_main: bool) -> dict:
    """The main network's config is adapter_config.json (what PEFT reads); the text encoders' is the
    `lora_adapter_metadata` header diffusers writes (`<component>.<field>` keys)."""
    config_file = file.parent / CONFIG_FILE
    if is_main and config_file.is_file():
        return json.loads(config_file.read_text(encoding="utf-8"))
    packed = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    found = {k[len(name) + 1:]: v for k, v in packed.items() if k.startswith(name + ".")}
    if not found:
        raise ValueError(f"no PEFT config for '{name}' in {file} (adapter_config.json / lora_adapter_metadata)")
    return found


def _compare(result: CheckResult, out: torch.Tensor, ref: Reference, dtype: torch.dtype) -> None:
    err = (out - ref.trained).norm().item()
    scale = ref.trained.norm().item() or 1.0
    effect = (ref.trained - ref.base).norm().item()
    floor = NOISE_FLOOR.get(dtype, 1e-5) * scale  # `dtype`: precision the file stores the model in
    result.rel_error = err / scale
    if effect > floor:
        result.effect_error = err / effect
    else:
        result.notes.append("the adapter's effect on the fixed input is within float noise: only the keys "
                            "and the output's closeness to the base model were checked")
    if err > max(EFFECT_TOL * effect, floor) or not torch.isfinite(out).all():
        result.problems.append(f"output differs from the trained model: error {err:.3e}, adapter effect "
                               f"{effect:.3e}, output norm {scale:.3e}")
