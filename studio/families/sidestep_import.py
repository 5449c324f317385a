"""Moving over from Side-Step (an ACE-Step 1.5 trainer, seed 000): its preprocessed datasets and its
`checkpoint-epoch-N` folders, converted into what this studio reads.

Side-Step's formats (its `preprocess.py` and `trainer_helpers.py`):
  dataset folder     one `<song>.pt` per song (torch.save of a dict) + its own manifest.json:
                       target_latents (T, D)        VAE latents of the song, 25 per second
                       attention_mask (T,)          ones over the latents
                       encoder_hidden_states (L, H) the condition encoder's packed text + lyrics + timbre
                       encoder_attention_mask (L,)  which of the L states are real
                       context_latents (T, 2D)      silence latents + chunk mask (text2music)
                       metadata                     caption, lyrics, bpm, keyscale, ... (plain values)
  checkpoint-epoch-N adapter_config.json + adapter_model.safetensors: a PEFT LoRA of ACE-Step's own decoder
                     (`base_model.model.layers.0.self_attn.q_proj.lora_A.weight`); training_state.pt
                     (epoch, global_step, optimizer and scheduler state); training_state.safetensors
                     (epoch, global_step); LoKR runs write lokr_weights.safetensors instead.

A dataset becomes a song cache (`studio/data/audio_preprocess.py`): `data.path` takes the new folder. Our
trainer builds the context latents itself (the same silence + ones), so `context_latents` is not kept.
A checkpoint becomes an adapter folder in diffusers' layout (`adapter.init_from`), with the settings it
needs in `sidestep_import.json`. Its optimizer state is not carried: Side-Step keys it by its own
parameter order, so an imported run starts its optimizer and schedule afresh from those weights.
Files are read with `torch.load(weights_only=True)`: tensors and plain values, never pickled code.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from studio.config.sections.music import ATTENTION_ALIASES
from studio.data.audio_preprocess import CACHE_KIND, ENCODING_VERSION, SONG, is_song_cache
from studio.data.manifest import MANIFEST_NAME, CacheManifest, Want

SOURCE = "side-step"
DATASET_KEYS = ("target_latents", "encoder_hidden_states", "encoder_attention_mask")
IMPORT_FILE = "sidestep_import.json"  # what an imported checkpoint holds and the settings to train it with
LORA_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ImportProblem(ValueError):
    """A Side-Step file that cannot be converted, named with the reason."""


def is_sidestep_checkpoint(folder: Path) -> bool:
    return any((Path(folder) / name).is_file() for name in (*LORA_FILES, "lokr_weights.safetensors",
                                                              "training_state.pt"))


# ---- datasets ------------------------------------------------------------------------------------
def _load_pt(path: Path) -> dict:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is named with torch's reason
        raise ImportProblem(f"{path}: not a readable tensor file ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ImportProblem(f"{path}: holds a {type(data).__name__}, expected a dict of tensors")
    return data


def _song_tensors(path: Path, data: dict) -> dict[str, torch.Tensor]:
    missing = [k for k in DATASET_KEYS if not isinstance(data.get(k), torch.Tensor)]
    if missing:
        raise ImportProblem(f"{path}: missing {', '.join(missing)} (found {', '.join(sorted(map(str, data))) or 'nothing'}"
                            f"); a Side-Step song file holds {', '.join(DATASET_KEYS)}, attention_mask, "
                            "context_latents and metadata")
    latents, states, mask = (data[k].detach().float() for k in DATASET_KEYS)
    latents = latents[0] if latents.dim() == 3 and latents.shape[0] == 1 else latents
    states = states[0] if states.dim() == 3 and states.shape[0] == 1 else states
    mask = mask[0] if mask.dim() == 2 and mask.shape[0] == 1 else mask
    if latents.dim() != 2 or states.dim() != 2 or mask.shape != states.shape[:1]:
        raise ImportProblem(f"{path}: shapes target_latents {tuple(latents.shape)}, encoder_hidden_states "
                            f"{tuple(states.shape)}, encoder_attention_mask {tuple(mask.shape)}; expected (T, D), "
                            "(L, H) and (L,)")
    frames = data.get("attention_mask")
    if isinstance(frames, torch.Tensor) and frames.reshape(-1).shape[0] == latents.shape[0]:
        latents = latents[frames.reshape(-1) > 0]
    states = states[mask > 0]
    if not len(latents) or not len(states):
        raise ImportProblem(f"{path}: no latent frames or no condition states left after its masks")
    return {"target_latents": latents.contiguous(), "encoder_hidden_states": states.contiguous()}


def convert_dataset(src: Path, out: Path) -> list[str]:
    """Every `<song>.pt` of `src` into a song cache at `out`; returns the songs' keys. All bad files are
    named together; nothing is written when one is bad."""
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    files = sorted(p for p in src.glob("*.pt") if not p.name.endswith(".tmp.pt"))
    if not files:
        raise ImportProblem(f"{src}: no Side-Step song files (<song>.pt) in this folder")
    if out == src:
        raise ImportProblem(f"{out}: write the converted dataset into another folder (Side-Step's "
                            f"{MANIFEST_NAME} is in this one)")
    if (out / MANIFEST_NAME).exists() and not is_song_cache(out):
        raise ImportProblem(f"{out}: already holds another {MANIFEST_NAME}; choose an empty folder")
    songs, problems = [], []
    for path in files:
        try:
            data = _load_pt(path)
            songs.append((path, _song_tensors(path, data), data.get("metadata") or {}))
        except ImportProblem as err:
            problems.append(str(err))
    if problems:
        raise ImportProblem("\n".join(problems))
    manifest = CacheManifest(out, CACHE_KIND)
    settings = {"source": SOURCE, "version": ENCODING_VERSION}
    for path, tensors, meta in songs:
        key = path.stem
        fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest.put(key, path.name, SONG, Want(fingerprint, settings), tensors)
        frames = int(tensors["target_latents"].shape[0])
        plain = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}
        manifest.entries[key]["meta"] = {**plain, "caption": meta.get("caption", key),
                                         "lyrics": meta.get("lyrics", ""), "frames": frames}
    manifest.keep_only({p.stem for p, _, _ in songs})
    manifest.save()
    return [p.stem for p, _, _ in songs]


# ---- checkpoints ---------------------------------------------------------------------------------
def _training_state(folder: Path) -> dict:
    """epoch and global_step, from training_state.safetensors, else training_state.pt (tensors only)."""
    meta = folder / "training_state.safetensors"
    if meta.is_file():
        from safetensors.torch import load_file

        return {k: int(v.reshape(-1)[0]) for k, v in load_file(str(meta)).items() if k in ("epoch", "global_step")}
    state = folder / "training_state.pt"
    if state.is_file():
        try:
            data = torch.load(str(state), map_location="cpu", weights_only=True)
            return {k: int(data[k]) for k in ("epoch", "global_step") if k in data}
        except Exception:  # noqa: BLE001 - an optimizer state with objects: the weights still import
            return {}
    return {}


def _diffusers_target(name: str) -> str:
    """`q_proj` -> `to_q`, `layers.0.self_attn.o_proj` -> `layers.0.self_attn.to_out.0`; others unchanged."""
    head, _, leaf = name.rpartition(".")
    renamed = ATTENTION_ALIASES.get(leaf, leaf)
    return f"{head}.{renamed}" if head else renamed


def convert_checkpoint(src: Path, out: Path) -> dict:
    """A Side-Step LoRA checkpoint into an adapter folder at `out` (diffusers keys); returns the record
    written to `out/sidestep_import.json`: the source, its epoch and step, and the adapter settings."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_ace_step_lora_to_diffusers
    from safetensors.torch import load_file, save_file

    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if (src / "lokr_weights.safetensors").is_file() and not (src / LORA_FILES[1]).is_file():
        raise ImportProblem(f"{src}: a Side-Step LoKR checkpoint (lokr_weights.safetensors); only LoRA checkpoints "
                            "are read (LoKR's layout comes from LyCORIS with Side-Step's own names)")
    missing = [name for name in LORA_FILES if not (src / name).is_file()]
    if missing:
        raise ImportProblem(f"{src}: not a Side-Step checkpoint folder, {', '.join(missing)} missing "
                            f"(checkpoint-epoch-N holds {', '.join(LORA_FILES)} and training_state.pt)")
    try:
        config = json.loads((src / LORA_FILES[0]).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ImportProblem(f"{src / LORA_FILES[0]}: not valid JSON ({err})") from None
    if str(config.get("peft_type", "LORA")).upper() != "LORA" or not config.get("r"):
        raise ImportProblem(f"{src / LORA_FILES[0]}: peft_type {config.get('peft_type')!r}, r {config.get('r')!r}; "
                            "a PEFT LoRA config (peft_type LORA with a rank r) is expected")
    weights = load_file(str(src / LORA_FILES[1]))
    odd = [k for k in weights if not k.startswith("base_model.model.")
           or not k.endswith((".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector",
                              ".lora_magnitude_vector.weight"))]
    if odd or not weights:
        raise ImportProblem(f"{src / LORA_FILES[1]}: keys {odd[:3] or '(none)'} are not PEFT LoRA keys of ACE-Step's "
                            "decoder (base_model.model.layers.N.self_attn.q_proj.lora_A.weight, ...)")
    converted = _convert_non_diffusers_ace_step_lora_to_diffusers(dict(weights))
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    record = {"source": str(src), **_training_state(src),
              "adapter": {"type": "dora" if config.get("use_dora") else "lora", "rank": int(config["r"]),
                          "alpha": float(config.get("lora_alpha", config["r"])),
                          "target_modules": [_diffusers_target(t) for t in targets]},
              "note": "weights only: Side-Step's optimizer state is keyed by its own parameter order, so the "
                      "optimizer and the learning-rate schedule start afresh"}
    if config.get("use_rslora"):
        record["adapter"]["network_args"] = "use_rslora=true"
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in converted.items()}, str(out / LORA_FILES[1]))
    (out / IMPORT_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record
