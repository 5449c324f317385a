"""The image cache: VAE latents per (image, resolution[, flipped]) and text-encoder outputs per caption,
kept in a `CacheManifest` so a rerun encodes only what changed.

Parts of an image entry:
  latents  fingerprint = sha256 of the image file; settings = VAE identity and dtype, every view's
           bucket/resize/crop, flip and mask flags. Tensors `latents_<res>` (4, h/8, w/8),
           `latents_<res>_flip`, `mask_<res>` (1, h/8, w/8).
  text     fingerprint = sha256 of the caption; settings = text encoders' identity and dtype.
           Tensors `prompt_embeds` (77, D) and, for SDXL, `pooled_prompt_embeds` (P).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from studio.data.image_source import DataError, cache_root, plan_views, select_items
from studio.data.images import View, load_view
from studio.data.manifest import CacheManifest, CacheReport, Want, read_tensors, sha256_text, stable_json
from studio.data.scan import ImageItem

log = logging.getLogger("studio.data")
CACHE_KIND = "image"
LATENTS, TEXT = "latents", "text"
EMPTY_CAPTION = "<empty caption>"  # entry holding the embedding caption dropout trains with
ENCODING_VERSION = 1  # bump when the way pixels are prepared changes, to invalidate old caches


def model_identity(cfg, path: str, subfolders: tuple[str, ...]) -> str:
    """Short hash naming the encoder weights: model path (resolved), revision, variant, and each part's
    config and weight-file sizes (a swapped model folder shows up as a changed identity). Families call
    it from their `cache_identity` with the sub-folders of their own encoders."""
    ident: dict = {"path": path, "revision": cfg.model.revision, "variant": cfg.model.weight_variant}
    local = Path(path)
    if local.is_file():
        ident["file_size"] = local.stat().st_size
    elif local.is_dir():
        for sub in subfolders:
            folder = local / sub
            config = folder / "config.json"
            ident[sub] = {"config": sha256_text(config.read_text(encoding="utf-8")) if config.is_file() else None,
                          "weights": sorted((p.name, p.stat().st_size) for p in folder.glob("*.safetensors"))}
    return sha256_text(stable_json(ident))[:16]


MEMO_BYTES = 512 * 2**20  # cached tensors kept in memory per process (readers only; collate copies them)


class ImageCache:
    """The cache for a list of items under a config; `serves_latents` / `serves_text` say what training
    may read from it (set by `activate()` once everything wanted is fresh)."""

    def __init__(self, cfg, family, items: list[ImageItem]):
        self.cfg, self.data = cfg, cfg.data
        self.root = cache_root(cfg)
        self.manifest = CacheManifest(self.root, CACHE_KIND)
        self.items = items
        self.resolutions = self.data.all_resolutions()
        views = plan_views(items, cfg)
        self.views: dict[str, list[View]] = {}
        for view in views:
            self.views.setdefault(items[view.item].key, []).append(view)
        self.use_latents = self.data.cache_latents
        # Shuffled captions change every step and a trained text encoder changes its own outputs.
        self.use_text = (self.data.cache_text_embeds and not self.data.shuffle_captions
                         and not getattr(cfg.adapter, "train_text_encoder", False))
        self.serves_latents = self.serves_text = False
        self.vae_settings = {"encoder": family.cache_identity(LATENTS), "dtype": str(family.vae_dtype),
                             "version": ENCODING_VERSION}
        self.text_settings = {"encoder": family.cache_identity(TEXT),
                              "dtype": str(family.dtype), "family": cfg.model.family}
        self.wanted = self._wanted()
        self._memo: dict[tuple, dict[str, torch.Tensor]] = {}  # see _read
        self._memo_bytes = 0

    def _wanted(self) -> dict[str, dict[str, Want]]:
        wanted: dict[str, dict[str, Want]] = {}
        for item in self.items:
            parts = {}
            if self.use_latents:
                views = [[self.resolutions[v.res], *v.plan.target, *v.plan.resize, v.plan.top, v.plan.left]
                         for v in self.views[item.key]]
                parts[LATENTS] = Want(item.sha256, {**self.vae_settings, "views": views, "flip": self.data.random_flip,
                                                    "mask": self.data.alpha_mask and item.has_alpha})
            if self.use_text:
                parts[TEXT] = Want(sha256_text(item.caption), self.text_settings)
            if parts:
                wanted[item.key] = parts
        if self.use_text and self.data.caption_dropout > 0:
            wanted[EMPTY_CAPTION] = {TEXT: Want(sha256_text(""), self.text_settings)}
        return wanted

    # ---- state -------------------------------------------------------------------------------
    def report(self) -> CacheReport:
        return self.manifest.report(self.wanted)

    def activate(self) -> None:
        """Serve every enabled part; only call when `report()` is fresh."""
        self.serves_latents, self.serves_text = self.use_latents, self.use_text

    # ---- building ----------------------------------------------------------------------------
    def build(self, family, on_progress=None, drop_others: bool = False) -> int:
        """Encode every stale or missing part (the encoders must be on the device); returns items encoded.
        `drop_others` removes entries of items no longer in the dataset (preprocessing the full set)."""
        self._check_writable()
        by_key = {item.key: item for item in self.items}
        todo = [key for key, parts in self.wanted.items()
                if any(self.manifest.part_state(key, p, w)[0] != "fresh" for p, w in parts.items())]
        step = self.data.vae_batch_size
        last_save = time.time()
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            self._encode_chunk(family, chunk, by_key)
            if time.time() - last_save > 10:  # an interrupted build keeps what it did
                self.manifest.save()
                last_save = time.time()
            if on_progress is not None:
                on_progress(min(start + step, len(todo)), len(todo))
        dropped = self.manifest.keep_only(set(self.wanted)) if drop_others else 0
        if todo or dropped or not self.manifest.exists:  # an unchanged cache is not even rewritten
            self.manifest.save()
        self.manifest.collect_garbage((LATENTS, TEXT))
        return len(todo)

    def _check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise DataError(f"data.cache_dir: cannot write the cache in {self.root} ({err.strerror}); set "
                            "data.cache_dir to a writable folder") from None

    def _encode_chunk(self, family, keys: list[str], by_key: dict[str, ImageItem]) -> None:
        stale = {key: [p for p, w in self.wanted[key].items() if self.manifest.part_state(key, p, w)[0] != "fresh"]
                 for key in keys}
        latents = self._encode_latents(family, [by_key[k] for k in keys if LATENTS in stale[k]])
        text_keys = [k for k in keys if TEXT in stale[k]]
        captions = ["" if k == EMPTY_CAPTION else by_key[k].caption for k in text_keys]
        embeds = family.encode_text(captions) if captions else {}
        compress = self.data.compress_cache
        for key in keys:
            source = "" if key == EMPTY_CAPTION else by_key[key].key
            if LATENTS in stale[key]:
                self.manifest.put(key, source, LATENTS, self.wanted[key][LATENTS], latents[key], compress)
            if TEXT in stale[key]:
                row = text_keys.index(key)
                tensors = {name: value[row] for name, value in embeds.items()}
                self.manifest.put(key, source, TEXT, self.wanted[key][TEXT], tensors, compress)

    def _encode_latents(self, family, items: list[ImageItem]) -> dict[str, dict[str, torch.Tensor]]:
        """Load every view (and its mirror image), batch equal shapes through the VAE."""
        out: dict[str, dict[str, torch.Tensor]] = {item.key: {} for item in items}
        by_shape: dict[tuple, list[tuple[str, str, torch.Tensor]]] = {}
        for item in items:
            for view in self.views[item.key]:
                res = self.resolutions[view.res]
                mask_on = self.data.alpha_mask and item.has_alpha
                pixels, mask = load_view(item.path, view.plan, False, mask_on)
                if mask is not None:
                    out[item.key][f"mask_{res}"] = mask
                jobs = [(f"latents_{res}", pixels)] + ([(f"latents_{res}_flip", pixels.flip(-1))]
                                                       if self.data.random_flip else [])
                for name, px in jobs:
                    by_shape.setdefault(tuple(px.shape), []).append((item.key, name, px))
        size = self.data.vae_batch_size
        for jobs in by_shape.values():
            for start in range(0, len(jobs), size):
                batch = jobs[start:start + size]
                encoded = family.encode_images(torch.stack([px for _, _, px in batch]))  # (B, 4, h/8, w/8)
                for (key, name, _), lat in zip(batch, encoded):
                    out[key][name] = lat.cpu()
        return out

    # ---- reading (training) --------------------------------------------------------------------
    def latents(self, item: ImageItem, res: int, flip: bool):
        """-> (latents (4, h, w), mask (1, h, w) or None) of one view."""
        names = [f"latents_{res}_flip" if flip else f"latents_{res}"]
        with_mask = self.data.alpha_mask and item.has_alpha
        if with_mask:
            names.append(f"mask_{res}")
        tensors = self._read(self.manifest.tensor_file(item.key, LATENTS), names)
        mask = tensors.get(f"mask_{res}")
        if mask is not None and flip:
            mask = mask.flip(-1)
        return tensors[names[0]], mask

    def text(self, item: ImageItem | None) -> dict[str, torch.Tensor]:
        """Cached text-encoder outputs of the item's caption (None: the empty caption)."""
        return self._read(self.manifest.tensor_file(item.key if item is not None else EMPTY_CAPTION, TEXT))

    def _read(self, path: Path, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Cache files never change during a run, so tensors read once stay in memory up to
        MEMO_BYTES per process: a small dataset is read from disk once, not twice per item per step
        (opening the safetensors files was ~1 ms of a 2.3 ms batch in the bench)."""
        key = (path, tuple(names) if names is not None else None)
        tensors = self._memo.get(key)
        if tensors is None:
            tensors = read_tensors(path, names)
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            if self._memo_bytes + size <= MEMO_BYTES:
                self._memo[key] = tensors
                self._memo_bytes += size
        return tensors


def training_items(cfg) -> list[ImageItem]:
    """Every item a training run will read: its train split and, with evaluation on, its eval split."""
    items, _, _ = select_items(cfg, "train", quiet=True)
    if cfg.evaluation.strategy != "no":
        seen = {it.key for it in items}
        items = items + [it for it in select_items(cfg, "eval", quiet=True)[0] if it.key not in seen]
    return items


def stale_message(cache: ImageCache, report: CacheReport, limit: int = 20) -> str:
    lines = "\n".join(f"  {key}: {why}" for key, why in report.reasons[:limit])
    more = f"\n  ... and {len(report.reasons) - limit} more" if len(report.reasons) > limit else ""
    return (f"data.stale_cache=error: the cache in {cache.root} is out of date ({report.summary()}):\n{lines}{more}\n"
            "Run `python -m studio preprocess CONFIG.json` to refresh it, or set data.stale_cache=refresh.")


def attach_image_cache(family) -> ImageCache | None:
    """Called by the family while loading: decide whether training reads the cache, refreshing a stale
    one first (or refusing, per `data.stale_cache`). None = encode every step."""
    cfg = family.cfg
    data = cfg.data
    if data.cache_mode == "off" or not (data.cache_latents or data.cache_text_embeds):
        return None
    cache = ImageCache(cfg, family, training_items(cfg))
    if data.cache_mode == "auto" and not cache.manifest.exists:
        return None
    if not cache.wanted:
        return None
    report = cache.report()
    if not report.is_fresh:
        if data.stale_cache == "error":
            raise DataError(stale_message(cache, report))
        log.info("refreshing the dataset cache in %s (%s)", cache.root, report.summary())
        # memory.offload_during_startup: the text encoders encode from system RAM (slower start, less VRAM).
        family.place_encoders(vae=True, text=not cfg.memory.offload_during_startup)
        cache.build(family)
    cache.activate()
    log.info("training from the cache in %s: latents %s, text embeddings %s", cache.root,
             "cached" if cache.serves_latents else "encoded per step",
             "cached" if cache.serves_text else "encoded per step")
    return cache

