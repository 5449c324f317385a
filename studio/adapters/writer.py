"""Write and read the adapter files of a run folder or checkpoint.

`adapter_model.safetensors` + `adapter_config.json`:
  PEFT backend: through the family's `save_adapter` (diffusers `save_lora_weights` layout on SD:
  `unet.<module>.lora_A.weight`, text encoders as `text_encoder.*`), config = PEFT's own JSON.
  LyCORIS backend: LyCORIS' kohya-style keys; the JSON describes the network (PEFT cannot load it).
`<job name>_kohya.safetensors` (families with `kohya_prefixes`): the ComfyUI / A1111 single file.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from studio.adapters import formats, peft_backend
from studio.adapters.formats import ADAPTER_FILE, CONFIG_FILE, UnsupportedExport
from studio.runfolder.atomic import atomic_write_text

log = logging.getLogger("studio.adapters")


def write_adapter_files(handle, out_dir: Path, step: int | None = None) -> list[Path]:
    """Checkpoints' and `AdapterHandle.save`'s files (unchecked; the final ones go through export.py)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    states = handle.component_state_dicts()
    written = write_native(handle, out_dir, states)
    if handle.family.kohya_prefixes:
        try:
            path = out_dir / formats.kohya_file_name(handle.cfg.job.name)
            write_kohya(handle, path, states, step)
            written.append(path)
        except UnsupportedExport as err:
            log.warning("kohya file not written: %s", err)
    link_for_diffusers(handle, out_dir)
    return written


def link_for_diffusers(handle, folder: Path) -> None:
    """`pipe.load_lora_weights(folder)` picks one .safetensors of the folder, preferring diffusers' own name
    `pytorch_lora_weights.safetensors` (diffusers lora_base.py `_best_guess_weight_name`); else the order
    of `os.listdir`. With the kohya file (and a checkpoint's trainable.safetensors) beside the adapter,
    that name is given to adapter_model.safetensors as a hard link (no extra disk), so the folder loads
    the same way every time. Only for adapters diffusers can load."""
    if not (handle.family.kohya_prefixes and handle.kind in ("lora", "dora", "locon", "dylora")):
        return
    source, target = folder / ADAPTER_FILE, folder / formats.DIFFUSERS_FILE
    if not source.is_file():
        return
    tmp = formats.temp_name(target)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # no hard links on this file system
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def write_native(handle, out_dir: Path, states: dict) -> list[Path]:
    if handle.impl.KOHYA_KEYS:  # LyCORIS: its own keys plus the description that rebuilds the network
        tensors = {k: v for sd in states.values() for k, v in sd.items()}
        description = describe(handle)
        formats.atomic_save_file(tensors, out_dir / ADAPTER_FILE,
                                 {"format": "pt", "studio_adapter": json.dumps(description)})
        atomic_write_text(out_dir / CONFIG_FILE, json.dumps(description, indent=2))
        return [out_dir / ADAPTER_FILE, out_dir / CONFIG_FILE]
    # The family writes its ecosystem layout into a private folder; each file is then renamed into place.
    tmp = formats.temp_name(out_dir / "adapter")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        # Text-encoder DoRA magnitudes get `.weight`: transformers' adapter loader (which diffusers uses for
        # text encoders) looks for `lora_magnitude_vector.<adapter>.weight` and drops the bare key.
        extra = {name: ({_te_key(k): v for k, v in sd.items()}, handle.adapters[name])
                 for name, sd in states.items() if name != handle.main}
        kwargs = {"text_encoder_states": extra} if extra else {}
        handle.family.save_adapter(tmp, states[handle.main], handle.config, **kwargs)
        written = []
        for path in sorted(tmp.iterdir()):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            os.replace(path, out_dir / path.name)
            written.append(out_dir / path.name)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _te_key(key: str) -> str:
    return key + ".weight" if key.endswith("lora_magnitude_vector") else key


def describe(handle) -> dict:
    """adapter_config.json of a LyCORIS adapter: enough to rebuild the network."""
    from studio.adapters.lycoris_backend import lycoris_prefix
    from studio.adapters.lycoris_backend import ALGOS
    from studio.config.kv import parse_key_values

    a = handle.cfg.adapter
    return {"studio_format": "lycoris", "adapter_type": handle.kind, "algo": ALGOS[handle.kind],
            "rank": a.rank, "alpha": a.alpha, "conv_rank": a.conv_rank, "conv_alpha": a.conv_alpha,
            "network_args": parse_key_values(a.network_args),
            "prefixes": {n: lycoris_prefix(handle.family, n) for n in handle.components},
            "target_modules": {n: spec.lycoris_pattern() for n, spec in handle.targets.items()}}


def kohya_tensors(handle, states: dict) -> dict[str, torch.Tensor]:
    own = handle.family.single_file_tensors(handle, states)  # a family whose single file is not kohya-keyed
    if own is not None:
        return own
    if handle.impl.KOHYA_KEYS:
        return {k: v for sd in states.values() for k, v in sd.items()}
    if handle.cfg.adapter.bias != "none":
        raise UnsupportedExport("kohya files carry no trained biases (adapter.bias is "
                                f"'{handle.cfg.adapter.bias}'); use adapter_model.safetensors")
    out = {}
    for name, sd in states.items():
        prefix = handle.family.kohya_prefixes.get(name)
        if prefix is None:
            raise UnsupportedExport(f"the kohya layout has no name for '{name}'")
        reason = handle.family.kohya_unsupported(name, handle.targets[name].modules)
        if reason:
            raise UnsupportedExport(reason)
        scalings, ranks = {}, {}
        for path, layer in peft_backend.tuner_layers(handle.components[name]):
            if hasattr(layer, "scaling") and peft_backend.ADAPTER_NAME in getattr(layer, "r", {}):
                scalings[path] = float(layer.scaling[peft_backend.ADAPTER_NAME])
                ranks[path] = int(layer.r[peft_backend.ADAPTER_NAME])
        out.update(formats.peft_to_kohya(handle.kind, prefix, sd, scalings, ranks))
    return out


def scaled_lora_layers(handle, states: dict, layout: str) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Per component, each PEFT LoRA layer's (down (r, in), up (out, r) * alpha / rank): the factors of a single
    file that folds the scale into up (Anima's and Z-Image's ComfyUI files). Anything but plain PEFT LoRA without
    biases, or layers the family's layout cannot name (`kohya_unsupported`), raise UnsupportedExport."""
    if handle.impl.KOHYA_KEYS or handle.kind != "lora" or handle.cfg.adapter.bias != "none":
        raise UnsupportedExport(f"{layout} holds plain LoRA layers (got {handle.kind} on {handle.backend}); "
                                "use adapter_model.safetensors")
    out: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    for name, sd in states.items():
        reason = handle.family.kohya_unsupported(name, handle.targets[name].modules)
        if reason:
            raise UnsupportedExport(reason)
        for path, layer in peft_backend.tuner_layers(handle.components[name]):
            if peft_backend.ADAPTER_NAME in getattr(layer, "r", {}):
                scale = float(layer.scaling[peft_backend.ADAPTER_NAME])
                out.setdefault(name, {})[path] = (sd[f"{path}.lora_A.weight"], sd[f"{path}.lora_B.weight"] * scale)
    return out


def write_kohya(handle, path: Path, states: dict | None = None, step: int | None = None) -> Path:
    states = states if states is not None else handle.component_state_dicts()
    tensors = kohya_tensors(handle, states)
    meta = formats.kohya_metadata(handle.cfg, handle.family, handle.kind, handle.backend, step,
                                  converted=not handle.impl.KOHYA_KEYS)
    formats.atomic_save_file(tensors, path, {"format": "pt", **meta})
    return path


def write_dora_lora(handle, path: Path, step: int | None = None) -> dict:
    """A DoRA run's change as a plain LoRA in the kohya layout (dora_lora.py); returns its measured error."""
    from studio.adapters import dora_lora

    rank = handle.cfg.adapter.dora_as_lora_rank
    if rank <= 0:
        raise UnsupportedExport("adapter.dora_as_lora_rank is 0: set the rank of the LoRA re-expression")
    tensors, stats = dora_lora.tensors_and_error(handle, rank)
    meta = formats.kohya_metadata(handle.cfg, handle.family, "lora", handle.backend, step, converted=True)
    meta.update(ss_network_dim=str(rank), ss_network_alpha=str(stats["alpha"]),  # one alpha in every layer
                studio_dora_as_lora=json.dumps({k: v for k, v in stats.items() if k != "per_layer"}))
    formats.atomic_save_file(tensors, path, {"format": "pt", **meta})
    return stats


# ---- reading -------------------------------------------------------------------------------------
def adapter_file(path: str | Path, field: str) -> Path:
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / ADAPTER_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{field}: {path} is neither an adapter file nor a folder with {ADAPTER_FILE}")
    return file


def read_adapter_folder(path: str | Path, handle, field: str = "adapter.init_from") -> dict[str, dict]:
    """Per-network state dicts of an adapter file (ours, a PEFT folder, or a kohya file) for `handle`."""
    weights, _ = formats.read_safetensors(adapter_file(path, field))
    if handle.impl.KOHYA_KEYS:
        from studio.adapters.lycoris_backend import lycoris_prefix

        return split_by_prefix(weights, {n: lycoris_prefix(handle.family, n) for n in handle.components}, field)
    if any(k.endswith(".lora_down.weight") for k in weights):  # a kohya file (ours or another trainer's)
        weights = kohya_lora_to_peft(weights, handle, field)
    out: dict[str, dict] = {}
    for key, value in weights.items():
        key = key.replace("lora_magnitude_vector.weight", "lora_magnitude_vector")  # see write_native
        comp, _, rest = key.partition(".")
        if comp in handle.components and rest:
            out.setdefault(comp, {})[rest] = value
        else:  # PEFT `save_pretrained` keys carry no component name
            out.setdefault(handle.main, {})[key.removeprefix("base_model.model.")] = value
    return out


def split_by_prefix(weights: dict, prefixes: dict[str, str], field: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    ordered = sorted(prefixes.items(), key=lambda item: -len(item[1]))  # lora_te1_ before lora_te_
    for key, value in weights.items():
        comp = next((n for n, p in ordered if key.startswith(p + "_")), None)
        if comp is None:
            raise ValueError(f"{field}: key '{key}' belongs to no adapted network (expected prefixes "
                             f"{', '.join(p + '_' for p in prefixes.values())})")
        out.setdefault(comp, {})[key] = value
    return out


def kohya_lora_to_peft(weights: dict, handle, field: str) -> dict[str, torch.Tensor]:
    """A kohya LoRA file -> `<component>.<module>.lora_A/B.weight` for this run's layers, with the file's
    per-layer alpha folded into lora_B so the update keeps the file's strength at this run's alpha / rank."""
    if handle.kind != "lora" or not handle.family.kohya_prefixes:
        raise ValueError(f"{field}: a kohya LoRA file can only start a 'lora' adapter of an image or music model")
    names = {}
    for comp, spec in handle.targets.items():
        prefix = handle.family.kohya_prefixes.get(comp)
        names.update({f"{prefix}_{path.replace('.', '_')}": (comp, path) for path in spec.modules})
    scale = handle.cfg.adapter.alpha / handle.cfg.adapter.rank
    out, unused = {}, []
    for key, value in weights.items():
        name, _, param = key.partition(".")
        if name not in names or param not in ("lora_down.weight", "lora_up.weight", "alpha"):
            unused.append(key)
            continue
        comp, path = names[name]
        if param == "lora_down.weight":
            out[f"{comp}.{path}.lora_A.weight"] = value
        elif param == "lora_up.weight":  # (out, rank)
            rank = value.shape[1]
            file_alpha = float(weights.get(f"{name}.alpha", torch.tensor(float(rank))))
            out[f"{comp}.{path}.lora_B.weight"] = value * (file_alpha / rank) / scale
    if unused:
        raise ValueError(f"{field}: {len(unused)} keys of the file fit no layer this run adapts, e.g. {unused[:3]}")
    return out
