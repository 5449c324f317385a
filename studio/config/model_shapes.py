"""What a model is made of, without loading it: each network's config and weight shapes, read from a
local diffusers/transformers folder (`config.json` + safetensors headers), from a hub repository's file
headers, or from a model built on the meta device. The memory estimate (studio/config/vram.py) counts
from these; no weights are read and torch is not imported."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

@dataclass
class Part:
    """One network of a model folder: its config and its weights' shapes (name -> shape)."""
    name: str
    config: dict
    shapes: dict[str, tuple[int, ...]]

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def linears(self) -> dict[str, tuple[int, int]]:
        """Module name -> (out, in) of every 2-D `.weight` (the layers an adapter can take)."""
        return {k[:-7]: s for k, s in self.shapes.items() if k.endswith(".weight") and len(s) == 2}


@dataclass
class ModelInfo:
    trained: Part  # the network the adapter goes on (UNet, transformer, or the causal LM itself)
    others: list[Part] = field(default_factory=list)  # VAE, text and condition encoders

    @property
    def key(self) -> tuple:
        return (self.trained.name, self.trained.params, tuple(p.params for p in self.others))


def _safetensors_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as fh:  # reads the header only
            for key in fh.keys():
                shapes[key] = tuple(fh.get_slice(key).get_shape())
    return shapes


def read_model(folder: str | Path) -> ModelInfo:
    """The weight shapes of a local diffusers or transformers folder (config.json + safetensors headers).
    The trained network is the `unet` or `transformer` subfolder, else the folder itself."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"model.path: {folder} is not a local model folder (the estimate reads its "
                                "config.json and safetensors headers)")
    parts = {}
    for sub in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        config = sub / "config.json"
        shapes = _safetensors_shapes(sub) if config.is_file() else {}
        if shapes:
            parts["" if sub == folder else sub.name] = Part(sub.name, json.loads(config.read_text()), shapes)
    trained = next((k for k in ("unet", "transformer", "") if k in parts), None)
    if trained is None:
        raise FileNotFoundError(f"model.path: {folder} holds no config.json with .safetensors weights beside it "
                                "(the estimate needs the model's safetensors files)")
    return ModelInfo(parts.pop(trained), list(parts.values()))


def model_from_shapes(config: dict, shapes: dict[str, tuple[int, ...]], name: str = "model",
                      others: list[Part] | None = None) -> ModelInfo:
    """A ModelInfo from a config dict and a name -> shape table (e.g. a model built on the meta device)."""
    return ModelInfo(Part(name, config, dict(shapes)), list(others or []))


# ---- where the numbers come from: the model folder and the GPU ------------------------------------------
_models: dict[tuple[str, float], ModelInfo] = {}
_hub_models: dict[tuple[str, str], ModelInfo | None] = {}


def local_model_folder(path: str) -> Path | None:
    """The local folder of `model.path` (a folder, `tiny:<family>` once written, a hub id already in the
    Hugging Face cache), or None when there is none to read here."""
    from studio.paths import tiny_model_dir

    if path.startswith("tiny:"):
        folder = tiny_model_dir(path[5:])
        return folder if folder.is_dir() else None
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    if local.exists() or path.count("/") != 1:
        return None  # a single-file checkpoint: no config.json to read the architecture from
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (or no hub library): no estimate
        return None


def hub_model(repo_id: str, revision: str = "") -> ModelInfo | None:
    """Weight shapes of a hub model not downloaded yet: its `config.json` files and the headers of its
    safetensors files (HTTP range reads; no weights). None offline or when the hub cannot say."""
    from huggingface_hub import HfApi, hf_hub_download, is_offline_mode

    if is_offline_mode():
        return None
    api, rev = HfApi(), revision or None
    try:
        files = api.list_repo_files(repo_id, revision=rev)
        parts = {}
        for config_file in (f for f in files if f.split("/")[-1] == "config.json" and f.count("/") <= 1):
            sub = config_file.rpartition("/")[0]
            weights = [f for f in files if f.endswith(".safetensors") and f.rpartition("/")[0] == sub]
            weights = [f for f in weights if f.count(".") == 1] or weights  # not the `.fp16.` variants
            shapes = {}
            for file in weights:
                meta = api.parse_safetensors_file_metadata(repo_id, file, revision=rev)
                shapes.update({k: tuple(t.shape) for k, t in meta.tensors.items()})
            if shapes:
                config = json.loads(Path(hf_hub_download(repo_id, config_file, revision=rev)).read_text())
                parts[sub] = Part(sub or repo_id.split("/")[-1], config, shapes)
    except Exception:  # noqa: BLE001 - no network, gated or private repo, no safetensors: no estimate
        return None
    trained = next((k for k in ("unet", "transformer", "") if k in parts), None)
    return None if trained is None else ModelInfo(parts.pop(trained), list(parts.values()))


def model_for(cfg, folder: str | Path | None = None, hub: bool = False) -> ModelInfo | None:
    """The job's model shapes (read once per folder and modification time), or None when unknown. `hub`:
    a hub id not in the local cache is asked from the hub (headers only), for the CLI and the train command."""
    from studio.config.single_file import names_single_file

    path = cfg.model.path
    if names_single_file(path) and cfg.model.extras_path.strip():
        path = cfg.model.extras_path  # a single transformer file: its architecture is that of its parts' model
    folder = Path(folder) if folder is not None else local_model_folder(path)
    if folder is None:
        if hub and path.count("/") == 1 and not Path(path).expanduser().exists() and not path.startswith((".", "/", "~")):
            key = (path, cfg.model.revision)
            if key not in _hub_models:
                _hub_models[key] = hub_model(path, cfg.model.revision)
            return _hub_models[key]
        return None
    key = (str(folder), folder.stat().st_mtime)
    if key not in _models:
        try:
            _models[key] = read_model(folder)
        except (OSError, ValueError):
            return None
    return _models[key]
