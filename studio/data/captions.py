"""Where an image's caption comes from (FIELDS D30-D33), and how it is varied per epoch.

A `CaptionSource` answers `caption_for(path) -> (caption, problem)`: exactly one of the two is set,
so the scan can name every image without a usable caption.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np


# A caption that is not valid UTF-8 is most often a Windows editor's ANSI file: read it as Windows-1252
# (Latin-1 for the five bytes cp1252 leaves undefined) and warn, rather than silently inserting U+FFFD.
CAPTION_FALLBACK = "cp1252"


def read_caption_text(path: Path) -> tuple[str, str]:
    """(text, warning): UTF-8 (a BOM allowed), else the stated fallback with a warning naming the file."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig").strip(), ""
    except UnicodeDecodeError as err:
        try:
            text = raw.decode(CAPTION_FALLBACK)
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        return text.strip(), (f"caption file {path.name} is not UTF-8 (byte {err.start}); read as "
                              f"{CAPTION_FALLBACK}: check the caption, or save it as UTF-8")


class CaptionSource:
    def __init__(self, folder: Path, strategy: str, data, instance_prompt: str = ""):
        self.folder, self.strategy, self.data = folder, strategy, data
        self.instance_prompt = instance_prompt or data.instance_prompt
        self.table: dict[str, tuple[str, str]] | None = None
        self.table_name = ""
        self.notes: dict[Path, str] = {}  # image -> a warning about its caption file (the scan reports it)
        if strategy in ("parquet", "jsonl"):
            self._load_table()

    def caption_for(self, path: Path) -> tuple[str | None, str | None]:
        if self.strategy == "instanceprompt":
            return self.instance_prompt.strip(), None
        if self.strategy == "filename":
            return caption_from_filename(path), None
        if self.strategy == "textfile":
            return self._from_textfile(path)
        return self._from_table(path)

    def extra_files(self) -> list[Path]:
        """Files besides the images whose content the captions depend on (for fingerprints)."""
        return [self.folder / self.table_name] if self.table_name else []

    # ---- textfile ------------------------------------------------------------------------------
    def _from_textfile(self, path: Path) -> tuple[str | None, str | None]:
        caption_file = path.with_suffix(self.data.caption_extension)
        if not caption_file.is_file():
            return None, f"no caption: {caption_file.name} not found"
        text, note = read_caption_text(caption_file)
        if note:
            self.notes[path] = note
        if not text:
            return None, f"empty caption file {caption_file.name}"
        return text, None

    # ---- parquet / jsonl -------------------------------------------------------------------------
    def _load_table(self) -> None:
        path = self._table_path()
        self.table_name = path.relative_to(self.folder).as_posix()
        rows = _read_rows(path, self.strategy)
        data = self.data
        self.table = {}
        for row in rows:
            if data.file_column not in row:
                raise ValueError(f"data.file_column: column '{data.file_column}' not in {path.name} "
                                 f"(columns: {', '.join(map(str, row))})")
            name = str(row[data.file_column]).replace("\\", "/")
            caption = _text(row.get(data.caption_column))
            fallback = _text(row.get(data.fallback_caption_column)) if data.fallback_caption_column else ""
            self.table[name] = (caption, fallback)
        if rows and data.caption_column not in rows[0]:
            raise ValueError(f"data.caption_column: column '{data.caption_column}' not in {path.name} "
                             f"(columns: {', '.join(map(str, rows[0]))})")

    def _table_path(self) -> Path:
        if self.data.metadata_file:
            path = self.folder / self.data.metadata_file
            if not path.is_file():
                raise FileNotFoundError(f"data.metadata_file: {path} not found")
            return path
        if self.strategy == "jsonl":
            candidates = [self.folder / "metadata.jsonl"] if (self.folder / "metadata.jsonl").is_file() else \
                sorted(self.folder.glob("*.jsonl"))
        else:
            candidates = sorted(self.folder.glob("*.parquet"))
        if len(candidates) != 1:
            kind = ".parquet" if self.strategy == "parquet" else ".jsonl"
            found = ", ".join(p.name for p in candidates) or "none"
            raise FileNotFoundError(f"data.metadata_file: caption_strategy '{self.strategy}' needs one {kind} "
                                    f"table in {self.folder} (found: {found}); name it in data.metadata_file")
        return candidates[0]

    def _from_table(self, path: Path) -> tuple[str | None, str | None]:
        rel = path.relative_to(self.folder).as_posix()
        row = self.table.get(rel) or self.table.get(path.name)
        if row is None:
            return None, f"no caption: no row for '{rel}' in {self.table_name} (column '{self.data.file_column}')"
        caption, fallback = row
        if caption:
            return caption, None
        if fallback:
            return fallback, None
        columns = f"'{self.data.caption_column}'" + (f" and '{self.data.fallback_caption_column}'"
                                                    if self.data.fallback_caption_column else "")
        return None, f"empty caption in {self.table_name}, column {columns}"


def _read_rows(path: Path, strategy: str) -> list[dict]:
    if strategy == "parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"data.metadata_file: {path.name} line {number} is not JSON: {err}") from None
    return rows


def _text(value) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN from pandas
        return ""
    return str(value).strip()


def caption_from_filename(path: Path) -> str:
    """`00_red-circle (2).png` -> `00 red circle`: separators become spaces, copy markers go."""
    stem = re.sub(r"\s*\(\d+\)$", "", path.stem)
    return re.sub(r"\s+", " ", re.sub(r"[_\-.]+", " ", stem)).strip()


def vary_caption(caption: str, rng: np.random.Generator, data) -> str:
    """Per-epoch caption: dropout to "" (unconditional), else tags shuffled after the first keep_tokens."""
    if data.caption_dropout > 0 and rng.random() < data.caption_dropout:
        return ""
    if not data.shuffle_captions:
        return caption
    sep = data.caption_separator or ","
    tags = [t.strip() for t in caption.split(sep) if t.strip()]
    head, tail = tags[: data.keep_tokens], tags[data.keep_tokens:]
    order = rng.permutation(len(tail))
    return f"{sep} ".join(head + [tail[i] for i in order])
