"""Files in and out through the browser: a run's downloads (adapter, ComfyUI/kohya file, merged model,
the whole run folder as a zip) and dataset uploads (files or a zip) into STUDIO_HOME/datasets/<name>.

Every file handed to the browser passes `StudioContext.can_serve` (the studio's one allow/deny rule);
uploads land only under STUDIO_HOME and never replace a file that is already there."""
from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path

from studio.adapters.formats import ADAPTER_FILE
from studio.data.audio import AUDIO_SUFFIXES
from studio.data.scan import SUPPORTED as IMAGE_SUFFIXES

EXPORTS_DIR = "exports"
DATASETS_DIR = "datasets"
TEXT_SUFFIXES = (".txt", ".caption", ".json", ".jsonl", ".parquet")
UPLOAD_SUFFIXES = tuple(IMAGE_SUFFIXES) + AUDIO_SUFFIXES + TEXT_SUFFIXES
MAX_UPLOAD_FILES = 10_000
MAX_UPLOAD_BYTES = 4 * 2**30  # unpacked: a zip may not expand past this (zip bombs)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class UploadError(ValueError):
    """A refused upload; the message names the field or file and what is allowed."""


# -- downloads --------------------------------------------------------------------------------------------
def _zip_folder(folder: Path, out: Path, skip_checkpoint_state: bool = False) -> Path:
    """`folder` as a zip (rebuilt only when a file in it is newer than the zip)."""
    real = folder.resolve()
    files = [p for p in sorted(folder.rglob("*"))  # links (and anything they lead to) stay out
             if p.is_file() and not p.is_symlink() and p.resolve().is_relative_to(real)]
    if skip_checkpoint_state:  # optimizer/RNG state only resumes a run; the adapters inside stay
        files = [p for p in files if p.name not in ("optimizer.pt", "scheduler.pt", "rng.pt", "ema.pt")]
    newest = max((p.stat().st_mtime for p in files), default=0)
    if out.is_file() and out.stat().st_mtime >= newest:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in files:
            zf.write(path, f"{folder.name}/{path.relative_to(folder)}")
    tmp.replace(out)
    return out


def run_downloads(ctx, run_dir: str | Path) -> tuple[list[str], str]:
    """Paths the browser may download for a run, and a line saying what they are (or why none)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return [], f"No run folder yet at `{run_dir}`."
    if not ctx.can_serve(run_dir):  # checked before zipping: a zip must not carry a blocked folder out
        return [], (f"`{run_dir}` is outside the folders the browser may read (STUDIO_HOME, --data-root) "
                    "or blocked; nothing is offered.")
    found = [run_dir / ADAPTER_FILE] if (run_dir / ADAPTER_FILE).is_file() else []
    found += sorted(run_dir.glob("*_kohya.safetensors"))
    exports = ctx.home / EXPORTS_DIR
    if (run_dir / "merged").is_dir():
        found.append(_zip_folder(run_dir / "merged", exports / f"{run_dir.name}-merged.zip"))
    found.append(_zip_folder(run_dir, exports / f"{run_dir.name}-run.zip", skip_checkpoint_state=True))
    allowed = [str(p) for p in found if ctx.can_serve(p)]
    what = ["adapter (PEFT/diffusers)" if ADAPTER_FILE in p else "ComfyUI / A1111 file" if "_kohya" in p else
            "merged model (zip)" if p.endswith("-merged.zip") else "run folder (zip, without optimizer state)"
            for p in allowed]
    return allowed, "Downloads: " + " · ".join(what) + "."


# -- uploads ----------------------------------------------------------------------------------------------
def dataset_folder(ctx, name: str) -> Path:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise UploadError(f"dataset name {name!r}: use 1-80 letters, digits, '.', '_' or '-' (it names the "
                          f"folder STUDIO_HOME/{DATASETS_DIR}/<name>)")
    root = (ctx.home / DATASETS_DIR).resolve()
    return root / name


def _check_name(name: str) -> None:
    if Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        raise UploadError(f"{name}: not a dataset file; allowed: {', '.join(UPLOAD_SUFFIXES)} (or a .zip of them)")


def _safe_target(folder: Path, relative: str) -> Path:
    target = (folder / relative).resolve()
    if folder.resolve() not in target.parents:
        raise UploadError(f"{relative}: a path outside the dataset folder is not allowed in an upload")
    if target.exists():
        raise UploadError(f"{relative} already exists in {folder}; nothing was replaced (pick another dataset "
                          "name, or delete the file first)")
    return target


def _zip_members(path: Path) -> list[zipfile.ZipInfo]:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile:
        raise UploadError(f"{path.name}: not a readable zip file") from None
    out = []
    for info in infos:
        mode = info.external_attr >> 16
        if info.is_dir() or stat.S_ISLNK(mode) or Path(info.filename).name.startswith(("._", ".")) \
                or "__MACOSX" in info.filename:
            continue  # folders come with their files; links and macOS metadata are never unpacked
        _check_name(f"{path.name}: {info.filename}")
        out.append(info)
    return out


def _plan(folder: Path, files: list[Path]) -> list[tuple[Path, str, zipfile.ZipInfo | None]]:
    """(source, relative target, zip member or None) for every file; checks types, count and size first."""
    plan, total = [], 0
    for path in files:
        if path.suffix.lower() == ".zip":
            for info in _zip_members(path):
                plan.append((path, info.filename, info))
                total += info.file_size
        else:
            _check_name(path.name)
            plan.append((path, path.name, None))
            total += path.stat().st_size
    if not plan:
        raise UploadError("no dataset files in the upload; allowed: " + ", ".join(UPLOAD_SUFFIXES) + " or a .zip")
    if len(plan) > MAX_UPLOAD_FILES:
        raise UploadError(f"{len(plan)} files: at most {MAX_UPLOAD_FILES} per upload")
    if total > MAX_UPLOAD_BYTES:
        raise UploadError(f"{total / 2**30:.1f} GiB unpacked: at most {MAX_UPLOAD_BYTES / 2**30:.0f} GiB per upload")
    targets = [_safe_target(folder, rel) for _, rel, _ in plan]
    if len(set(targets)) < len(targets):
        raise UploadError("two uploaded files have the same name; rename one")
    return [(src, str(t), info) for (src, _, info), t in zip(plan, targets)]


def save_upload(ctx, name: str, files: list[str | Path]) -> tuple[Path, int]:
    """Copy uploaded files (zips unpacked) into STUDIO_HOME/datasets/<name>; returns (folder, count).
    Everything is checked before the first file is written."""
    folder = dataset_folder(ctx, name)
    plan = _plan(folder, [Path(f) for f in files or []])
    for src, target, info in plan:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        if info is None:
            shutil.copyfile(src, target)
        else:
            with zipfile.ZipFile(src) as zf, zf.open(info) as fin, open(target, "xb") as fout:
                shutil.copyfileobj(fin, fout)
    return folder, len(plan)


# -- preview and captions ---------------------------------------------------------------------------------
def dataset_images(folder: Path, limit: int = 200) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]


def caption_path(folder: Path, image: str | Path, extension: str = ".txt") -> Path:
    image = Path(image).resolve()
    if Path(folder).resolve() not in image.parents:
        raise UploadError(f"{image}: not a file of the dataset {folder}")
    return image.with_suffix(extension)


def read_caption(folder: Path, image: str | Path, extension: str = ".txt") -> str:
    path = caption_path(folder, image, extension)
    return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""


def write_caption(folder: Path, image: str | Path, text: str, extension: str = ".txt") -> Path:
    path = caption_path(folder, image, extension)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text.strip() + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
