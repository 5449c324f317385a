"""The preflight scan: every file of the dataset folders checked once, every problem named with its path.

Facts about a file (content hash, size, format, decode error) depend only on its bytes, so they are
remembered in `scan.json` in the cache folder keyed by (size, mtime): a rerun on an unchanged folder
only stats the files. Verdicts that depend on settings (too small, too large, missing caption)
are recomputed every time.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import json
import mimetypes
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from studio.data.captions import CaptionSource
from studio.data.manifest import atomic_write

SUPPORTED = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
# Image formats people keep next to their pictures that this pipeline does not decode.
UNSUPPORTED = {".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".psd", ".svg", ".ico", ".dng",
               ".cr2", ".nef", ".arw", ".raw", ".jp2", ".exr", ".hdr", ".tga", ".mp4", ".mov", ".webm"}
SCAN_FILE = "scan.json"
# No image larger than this is decoded (300 MB as RGB): above any camera photo people train on, while
# a 481 KB PNG claiming 13000 x 13000 px (169 million) would cost ~660 MB to open.
MAX_DECODE_PIXELS = 100_000_000


@dataclass
class FileFacts:
    """What the bytes of one image file say, independent of any setting."""

    size: int
    mtime_ns: int
    sha256: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    has_alpha: bool = False
    error: str | None = None  # set when the file cannot be used at all


@dataclass
class ImageItem:
    path: Path
    key: str  # stable name of the item in caches and splits (path relative to the cache's anchor)
    caption: str
    width: int
    height: int
    has_alpha: bool
    sha256: str
    folder: int = 0  # index into the dataset folders (0 = data.path)


@dataclass
class Finding:
    path: Path
    reason: str


@dataclass
class ScanReport:
    items: list[ImageItem] = field(default_factory=list)
    bad: list[Finding] = field(default_factory=list)  # left out
    warnings: list[Finding] = field(default_factory=list)  # kept, but worth fixing

    def listing(self, findings: list[Finding] | None = None) -> str:
        return "\n".join(f"  {f.path}: {f.reason}" for f in (self.bad if findings is None else findings))


def inspect_file(path: Path, stat: os.stat_result) -> FileFacts:
    """Hash and fully decode one file (a header alone does not reveal a truncated image)."""
    facts = FileFacts(stat.st_size, stat.st_mtime_ns)
    if stat.st_size == 0:
        facts.error = "empty file (0 bytes)"
        return facts
    raw = path.read_bytes()
    facts.sha256 = hashlib.sha256(raw).hexdigest()
    expected = SUPPORTED.get(path.suffix.lower(), "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                facts.width, facts.height, facts.format = img.width, img.height, img.format or ""
                # Before anything that decodes (PNG's getexif loads the whole image): a bomb costs GBs.
                if img.width * img.height > MAX_DECODE_PIXELS:
                    facts.error = (f"too large to decode: {img.width}x{img.height} px = "
                                   f"{img.width * img.height / 1e6:.0f} million pixels (limit "
                                   f"{MAX_DECODE_PIXELS / 1e6:.0f} million; a possible decompression bomb)")
                    return facts
                if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation: shown turned by 90 degrees
                    facts.width, facts.height = img.height, img.width
                facts.has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
                img.load()
    except Image.DecompressionBombError:
        facts.error = (f"too large to decode: over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} million pixels, refused by "
                       f"the image decoder (limit {MAX_DECODE_PIXELS / 1e6:.0f} million)")
    except UnidentifiedImageError:
        facts.error = (f"not an image: the file holds text, not {expected} data (wrong extension?)"
                       if _looks_like_text(raw) else f"not a readable image: unknown or corrupt {expected} data")
    except (OSError, EOFError, SyntaxError, ValueError) as err:  # PIL reports truncation and bad chunks this way
        facts.error = f"truncated or corrupt image data ({err})"
    return facts


def _looks_like_text(raw: bytes) -> bool:
    head = raw[:1024]
    if b"\0" in head:
        return False
    try:  # incremental: a character cut at the 1024-byte boundary is not an error
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


# Facts already computed in this process, by (path, size, mtime): a read-only dataset is scanned
# by preflight, cache check and dataset build without decoding twice.
_PROCESS_FACTS: dict[tuple[str, int, int], FileFacts] = {}


class FactsCache:
    """`scan.json` in the cache folder: file facts keyed by item key, reused while (size, mtime) hold."""

    def __init__(self, root: Path | None):
        self.path = root / SCAN_FILE if root is not None else None
        self.known: dict[str, dict] = {}
        self.changed = False
        if self.path is not None and self.path.is_file():
            try:
                self.known = json.loads(self.path.read_text(encoding="utf-8")).get("files", {})
            except (json.JSONDecodeError, OSError, AttributeError):
                self.known = {}

    def facts(self, key: str, path: Path) -> FileFacts:
        stat = path.stat()
        old = self.known.get(key)
        if old and old.get("size") == stat.st_size and old.get("mtime_ns") == stat.st_mtime_ns:
            return FileFacts(**old)
        memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
        facts = _PROCESS_FACTS.get(memo_key) or inspect_file(path, stat)
        _PROCESS_FACTS[memo_key] = facts
        self.known[key] = asdict(facts)
        self.changed = True
        return facts

    def save(self) -> None:
        """Write the facts of files still present (best effort: a read-only dataset is fine)."""
        if self.path is None:
            return
        anchor = self.path.parent.parent
        present = {k: v for k, v in self.known.items() if (anchor / k).is_file()}
        if not self.changed and len(present) == len(self.known):
            return
        self.known = present
        try:
            atomic_write(self.path, json.dumps({"version": 1, "files": self.known}, sort_keys=True).encode("utf-8"))
        except OSError:
            pass


def dataset_files(folder: Path, skip: Path | None = None) -> list[Path]:
    """Every file under `folder`, sorted; hidden files and folders (the cache) are not data."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (skip is None or base / d != skip))
        out += [base / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def file_kind(path: Path) -> str:
    """"image" (trainable), "unsupported" (an image or video format we do not read) or "other"."""
    suffix = path.suffix.lower()
    if suffix in SUPPORTED:
        return "image"
    guessed = mimetypes.guess_type(path.name)[0] or ""
    if suffix in UNSUPPORTED or guessed.startswith(("image/", "video/")):
        return "unsupported"
    return "other"


def scan_folder(folder: Path, index: int, captions: CaptionSource, data, facts_cache: FactsCache,
                anchor: Path, report: ScanReport) -> None:
    """Add the folder's usable images to `report.items` and every problem to `report.bad`."""
    supported = ", ".join(SUPPORTED)
    for path in dataset_files(folder, skip=facts_cache.path.parent if facts_cache.path else None):
        kind = file_kind(path)
        if kind == "unsupported":
            report.bad.append(Finding(path, f"unsupported format {path.suffix.lower()} (use {supported})"))
            continue
        if kind != "image":
            continue
        key = Path(os.path.relpath(path, anchor)).as_posix()
        facts = facts_cache.facts(key, path)
        reason = facts.error or _size_problem(facts, data)
        if reason is None:
            caption, reason = captions.caption_for(path)
            if path in captions.notes:
                report.warnings.append(Finding(path, captions.notes.pop(path)))
        if reason is not None:
            report.bad.append(Finding(path, reason))
            continue
        expected = SUPPORTED[path.suffix.lower()]
        if facts.format and facts.format != expected:
            report.warnings.append(Finding(path, f"{facts.format} data in a {path.suffix} file (mislabelled; it "
                                           "is used, but renaming it avoids trouble in other tools)"))
        report.items.append(ImageItem(path, key, caption, facts.width, facts.height, facts.has_alpha,
                                      facts.sha256, index))


def _size_problem(facts: FileFacts, data) -> str | None:
    size = f"{facts.width}x{facts.height} px"
    if max(facts.width, facts.height) > data.max_image_side:
        return f"too large: {size} (data.max_image_side = {data.max_image_side})"
    if min(facts.width, facts.height) < data.min_image_side:
        return f"too small: {size} (data.min_image_side = {data.min_image_side})"
    return None
