"""Every data check that needs no model, run before the run folder is made or any model is loaded
(issue #18 item 11): the image scan, and the chat/text files of a causal LM read without a tokenizer."""
from __future__ import annotations

from studio.config.fields import IMAGE_FAMILIES


def data_problems(cfg) -> list[tuple[str, str]]:
    """(field, message) for each dataset problem; empty when training may start."""
    if cfg.data.path.startswith("demo:") and cfg.model.family not in IMAGE_FAMILIES:
        return []
    if cfg.model.family in IMAGE_FAMILIES:
        return _image_problems(cfg)
    if cfg.model.family == "causal_lm":
        return _text_problems(cfg)
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
