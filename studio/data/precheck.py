"""Every data check that needs no model, run before the run folder is made or any model is loaded
(issue #18 item 11): the image scan, and the chat/text files of a causal LM read without a tokenizer."""
from __future__ import annotations

from studio.registry.families import FAMILIES


def data_problems(cfg) -> list[tuple[str, str]]:
    """(field, message) for each dataset problem; empty when training may start."""
    kind = FAMILIES[cfg.model.family].data  # what `data.path` holds, from the family registry
    if cfg.data.path.startswith("demo:") and kind != "images":
        return []
    check = {"images": _image_problems, "text": _text_problems, "songs": _song_problems}.get(kind)
    return check(cfg) if check else []


def _song_problems(cfg) -> list[tuple[str, str]]:
    """Songs are listed with their sidecars (not decoded): an empty or unreadable folder is named now."""
    from studio.data.audio import AUDIO_SUFFIXES, find_songs
    from studio.data.audio_preprocess import cache_dir_for

    try:
        _, folder = cache_dir_for(cfg)
        if folder is None:  # an already preprocessed dataset
            return []
        songs, bad = find_songs(folder)  # the cache folder is hidden, so not listed
    except (FileNotFoundError, ValueError) as err:
        return [("data.path", str(err).removeprefix("data.path: "))]
    listing = "; ".join(f"{f.path.name}: {f.reason}" for f in bad[:10])
    if not songs:
        return [("data.path", f"no usable songs in {cfg.data.path} (audio files: {', '.join(AUDIO_SUFFIXES)})"
                 + (f"; {listing}" if listing else ""))]
    if bad and cfg.data.on_bad_file == "error":
        return [("data.on_bad_file", f"error: {len(bad)} unusable song(s): {listing}")]
    return []


def _image_problems(cfg) -> list[tuple[str, str]]:
    from studio.data.image_source import DataError, check_bad_files
    from studio.data.preflight import scan_job_images

    try:
        report = scan_job_images(cfg)
        check_bad_files(report, cfg.data.on_bad_file, quiet=True)
    except (DataError, ValueError, FileNotFoundError) as err:
        text = str(err)
        field = text.split(":", 1)[0].split("=", 1)[0] if text.startswith("data.") else "data.path"
        return [(field, text.removeprefix(f"{field}: "))]
    if not report.items:
        return [("data.path", f"no usable image in {cfg.data.path} ({len(report.bad)} unusable; supported: "
                 ".png .jpg .jpeg .webp .bmp with a caption)")]
    return []


def _text_problems(cfg) -> list[tuple[str, str]]:
    from studio.data.chat import DataError, load_conversations, resolve_text_path
    from studio.data.text_corpus import read_documents

    sft = (cfg.model.variant or "sft") == "sft"
    load = load_conversations if sft else read_documents
    out = []
    for field, value in (("data.path", cfg.data.path), ("data.eval_path", cfg.data.eval_path)):
        if not value:
            continue
        try:
            items = load(resolve_text_path(value, field), field)
        except DataError as err:
            out.append((field, str(err).removeprefix(f"{field}: ")))
            continue
        except (UnicodeDecodeError, IsADirectoryError) as err:
            out.append((field, f"{value} cannot be read as UTF-8 JSONL ({err})"))
            continue
        if not items:
            shape = ("one JSON object a line with `messages`, `conversations` or `instruction` + `output`"
                     if sft else "plain text or JSONL with a `text` field")
            out.append((field, f"{value} holds no conversations; expected {shape}"))
    return out
