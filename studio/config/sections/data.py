"""`data` section (FIELDS §3): dataset folders, captions, resolution and buckets, scan and cache."""
from __future__ import annotations

import math
from typing import Literal

from studio.config.fields import IMAGE_FAMILIES, Section, setting

CaptionStrategy = Literal["textfile", "filename", "instanceprompt", "parquet", "jsonl"]


# The settings of the table strategies show only while one of them is chosen.
FROM_TABLE = {"data.caption_strategy": ("parquet", "jsonl")}


class DatasetFolder(Section):
    """One more image folder trained next to `data.path`."""

    path: str = setting(..., "Folder of images (with captions, per the caption strategy).", widget="path")
    repeats: int = setting(1, "How many times each image of this folder is seen per epoch.", ge=1, le=10_000)
    weight: float = setting(1.0, "Relative sampling weight of this folder (see `data.dataset_sampling`).",
                            gt=0.0, le=1000.0)
    caption_strategy: CaptionStrategy | Literal[""] = setting(
        "", "Caption source for this folder; empty = the same as `data.caption_strategy`.")
    instance_prompt: str = setting("", "Prompt for every image of this folder when its strategy is "
                                   "`instanceprompt` (e.g. a class prompt for a regularisation folder).")


class DataSection(Section):
    # ---- where the data is -----------------------------------------------------------------
    path: str = setting("", "Training data: a folder of images with captions (image families), a "
                        "folder of songs (music), or a JSONL / text file (causal LM).", widget="path")
    eval_path: str = setting("", "Optional separate evaluation data, same format as the training data. "
                             "Leave empty to hold out `eval_split_ratio` of the training data instead.",
                             group="advanced", widget="path")
    eval_split_ratio: float = setting(0.0, "Share of the training data held out for evaluation "
                                      "(0.1 = 10 %). The split is fixed by the seed. 0 = no split.",
                                      ge=0.0, lt=1.0, group="advanced", step=0.01)
    max_samples: int = setting(0, "Use at most this many training items (for smoke tests or trimming a "
                               "huge set). 0 = use everything.", ge=0, le=10_000_000, group="advanced")
    shuffle: bool = setting(True, "Shuffle the order of items at every epoch (the order still depends "
                            "only on the seed and the epoch, so a resumed run sees the same batches).",
                            group="advanced")
    max_seq_length: int = setting(512, "Longest token sequence trained on. Chat examples beyond it are cut "
                                  "(the run reports how many); pretraining text is packed into blocks of "
                                  "this length. Memory grows with it: 512-1024 suits dialogue, 2048+ long "
                                  "documents.", ge=128, le=32768, step=8, families=("causal_lm",))
    packing: bool = setting(False, "Padding-free batches: the examples of a batch are laid end to end in "
                            "one row, and the token positions restart at each example so no example "
                            "attends to another. No compute is spent on padding, the loss is the same. "
                            "Helps most with chat examples of very different lengths.",
                            group="advanced", families=("causal_lm",))
    chat_template_fallback: Literal["chatml", "zephyr", "alpaca"] = setting(
        "chatml", "Conversation format used only when the tokenizer has no chat template of its own (base "
        "models): `chatml` (<|im_start|>role ... <|im_end|>), `zephyr` (<|user|> ... </s>) or `alpaca` "
        "(### Instruction / ### Response). It is saved with the adapter's tokenizer.",
        group="advanced", families=("causal_lm",))
    chunk_seconds: int = setting(0, "Train on a random window of about this many seconds of each song per "
                                 "step (cut from the cached latents; a new window every epoch). Saves memory "
                                 "and adds variety on long songs: 60-120 is the useful range, below 60 the "
                                 "model may lose the song structure. 0 = whole songs.", ge=0, le=600,
                                 families=("acestep",))
    normalize: Literal["none", "peak", "lufs"] = setting(
        "none", "Loudness normalisation while preprocessing: `peak` scales each song to -1 dBFS peak, "
        "`lufs` to -14 LUFS integrated loudness (streaming level; peaks are then kept at or below -1 dBFS).",
        families=("acestep",))
    max_duration: float = setting(0.0, "Songs longer than this many seconds are cut to it while "
                                  "preprocessing. 0 = the model's limit (10 minutes for ACE-Step 1.5).",
                                  ge=0.0, le=3600.0, families=("acestep",), group="advanced")
    min_duration: float = setting(5.0, "Audio files shorter than this many seconds are reported and left "
                                  "out.", gt=0.0, le=600.0, families=("acestep",), group="advanced")
    repeats: int = setting(1, "How many times each image of `data.path` is seen per epoch. Raise it for a "
                           "small subject set trained next to a big regularisation folder.", ge=1,
                           le=10_000, families=IMAGE_FAMILIES, group="advanced")
    datasets: list[DatasetFolder] = setting(
        None, "More image folders trained together with `data.path`, each with its own repeats, weight "
        "and caption source.", default_factory=list, families=IMAGE_FAMILIES, group="advanced",
        widget="code")
    dataset_sampling: Literal["auto-weighting", "uniform"] = setting(
        "auto-weighting", "How folders share an epoch. `auto-weighting`: every image (times its repeats and "
        "weight) is equally likely, so big folders get more draws. `uniform`: each folder gets a share set "
        "by its weight alone, whatever its size.", families=IMAGE_FAMILIES, group="advanced")
    # ---- scan ----------------------------------------------------------------------------------
    on_bad_file: Literal["skip", "error"] = setting(
        "skip", "What to do with unreadable or invalid files found by the scan: `skip` trains on the rest "
        "and reports each one; `error` refuses to start.", group="advanced")
    min_image_side: int = setting(64, "Images whose shorter side is below this many pixels are reported "
                                  "and left out (thumbnails teach blur).", ge=1, le=16384,
                                  families=IMAGE_FAMILIES, group="advanced")
    max_image_side: int = setting(16384, "Images whose longer side is above this many pixels are reported "
                                  "and left out (they would take gigabytes to decode).", ge=64, le=65536,
                                  families=IMAGE_FAMILIES, group="advanced")
    # ---- captions ------------------------------------------------------------------------------
    caption_strategy: CaptionStrategy = setting(
        "textfile", "Where captions come from. `textfile`: a text file next to each image; `filename`: the "
        "file name with `_` and `-` turned into spaces; `instanceprompt`: the same prompt for every image; "
        "`parquet` / `jsonl`: a table in the folder with a file-name column and a caption column.",
        families=IMAGE_FAMILIES)
    caption_extension: str = setting(".txt", "Extension of the caption file next to each image "
                                     "(`photo.png` -> `photo.txt`).", families=IMAGE_FAMILIES,
                                     group="advanced", when={"data.caption_strategy": ("textfile",)})
    instance_prompt: str = setting("", "The prompt every image gets with the `instanceprompt` strategy, "
                                   "e.g. `a photo of sks dog`.", families=IMAGE_FAMILIES,
                                   when={"data.caption_strategy": ("instanceprompt",)})
    metadata_file: str = setting("", "Parquet or JSONL table for the `parquet` / `jsonl` strategies, "
                                 "relative to the folder. Empty = the only `.parquet` file, or "
                                 "`metadata.jsonl`.", families=IMAGE_FAMILIES, group="advanced",
                                 when=FROM_TABLE)
    file_column: str = setting("file_name", "Table column holding each image's path relative to the "
                               "folder (or its bare file name).", families=IMAGE_FAMILIES, group="advanced",
                               when=FROM_TABLE)
    caption_column: str = setting("caption", "Table column holding the caption.", families=IMAGE_FAMILIES,
                                  group="advanced", when=FROM_TABLE)
    fallback_caption_column: str = setting("", "Column used when the caption column is empty for a row. "
                                           "Empty = such rows are reported as missing a caption.",
                                           families=IMAGE_FAMILIES, group="advanced", when=FROM_TABLE)
    shuffle_captions: bool = setting(False, "Shuffle the comma-separated tags of each caption every epoch "
                                     "(tag-style captions). Captions then change per step, so their text "
                                     "embeddings are not cached.", families=IMAGE_FAMILIES,
                                     group="advanced")
    keep_tokens: int = setting(0, "With caption shuffling, keep this many leading tags in place (e.g. the "
                               "trigger word).", ge=0, le=255, families=IMAGE_FAMILIES, group="advanced")
    caption_separator: str = setting(",", "What separates tags for shuffling and keep-tokens.",
                                     families=IMAGE_FAMILIES, group="advanced")
    caption_dropout: float = setting(0.0, "Share of steps where an image is trained with an empty caption, "
                                     "so the adapter also learns the unconditional case (0.05-0.1 is "
                                     "common). 0 = off.", ge=0.0, le=1.0, families=IMAGE_FAMILIES,
                                     group="advanced", step=0.01)
    # ---- resolution, buckets, crop ---------------------------------------------------------------
    resolution: int = setting(512, "Training resolution in pixels: buckets hold about this many pixels "
                              "squared (512 for SD 1.5, 1024 for SDXL). Also the default sample size.",
                              ge=64, le=4096, families=IMAGE_FAMILIES, step=64)
    resolutions: list[int] = setting(None, "Train at several resolutions, e.g. [512, 768, 1024]: every "
                                     "image is used (and cached) at each one. Empty = only `resolution`.",
                                     default_factory=list, families=IMAGE_FAMILIES, group="advanced")
    batch_size_per_resolution: list[int] = setting(
        None, "One batch size per entry of `resolutions` (bigger pictures usually need smaller batches). "
        "Empty = `training.batch_size` everywhere.", default_factory=list, families=IMAGE_FAMILIES,
        group="advanced")
    progressive_resolution: bool = setting(False, "Train the resolutions one after another, smallest first, "
                                           "instead of mixing them (needs two or more `resolutions`).",
                                           families=IMAGE_FAMILIES, group="advanced")
    progressive_fractions: list[float] = setting(
        None, "Share of all training steps spent at each resolution, in the order of `resolutions`; "
        "must add up to 1.0. Empty = equal shares.", default_factory=list, families=IMAGE_FAMILIES,
        group="advanced")
    resolution_type: Literal["pixel_area", "pixel"] = setting(
        "pixel_area", "`pixel_area`: a bucket keeps about resolution x resolution pixels whatever its "
        "shape (512 -> 512x512, 640x384, ...). `pixel`: the shorter side becomes the resolution (more "
        "pixels, more memory for wide images).", families=IMAGE_FAMILIES, group="advanced")
    enable_bucket: bool = setting(True, "Aspect-ratio bucketing: images go to the bucket whose shape is "
                                  "closest to their own, so they are not squashed or cropped to squares. "
                                  "Every batch holds one bucket shape.", families=IMAGE_FAMILIES,
                                  group="advanced")
    bucket_step: int = setting(64, "Bucket sides are multiples of this many pixels (a multiple of 8; 64 "
                               "suits most models).", ge=8, le=512, families=IMAGE_FAMILIES, group="advanced")
    min_bucket_resolution: int = setting(0, "Shortest bucket side in pixels. 0 = half the resolution.",
                                         ge=0, le=8192, families=IMAGE_FAMILIES, group="advanced")
    max_bucket_resolution: int = setting(0, "Longest bucket side in pixels. 0 = twice the resolution.",
                                         ge=0, le=16384, families=IMAGE_FAMILIES, group="advanced")
    bucket_no_upscale: bool = setting(False, "Leave images smaller than the resolution at their own size "
                                      "(rounded down to the bucket step) instead of enlarging them.",
                                      families=IMAGE_FAMILIES, group="advanced")
    bucket_no_shuffle: bool = setting(False, "Keep the items of each bucket in folder order instead of "
                                      "shuffling them (batches are still drawn in a seeded order).",
                                      families=IMAGE_FAMILIES, group="advanced")
    crop: bool = setting(False, "Crop images to the shape chosen by `crop_aspect` (otherwise an image "
                         "is only resized to its bucket, trimming the few pixels rounding leaves over).",
                         families=IMAGE_FAMILIES, group="advanced")
    crop_style: Literal["center", "centre", "corner", "random"] = setting(
        "random", "Which part is kept when cropping: `center`, `corner` (bottom-right) or `random` (a new "
        "position every epoch; fixed per image when training from the cache).", families=IMAGE_FAMILIES,
        group="advanced")
    crop_aspect: Literal["square", "preserve", "closest", "random"] = setting(
        "square", "Shape of the crop: `square`; `preserve` the image's own aspect (its bucket); `closest` "
        "entry of `crop_aspect_buckets`; or a `random` entry of that list, drawn once per image.",
        families=IMAGE_FAMILIES, group="advanced")
    crop_aspect_buckets: list[float] = setting(None, "Aspect ratios (width / height) for `crop_aspect` "
                                               "closest or random, e.g. [0.75, 1.0, 1.5].",
                                               default_factory=list, families=IMAGE_FAMILIES,
                                               group="advanced")
    random_flip: bool = setting(False, "Mirror images left-right at random. Doubles the variety of "
                                "poses; leave off for text, logos or asymmetric subjects. With the cache "
                                "both orientations are encoded.", families=IMAGE_FAMILIES, group="advanced")
    alpha_mask: bool = setting(False, "Use each image's alpha channel as a loss mask: transparent areas do "
                               "not count. Images without alpha train normally.", families=IMAGE_FAMILIES,
                               group="advanced")
    # ---- cache ---------------------------------------------------------------------------------
    cache_dir: str = setting("", "Where cached latents and text embeddings are kept. Empty = a "
                             "`.studio_cache` folder inside the dataset folder.", group="advanced",
                             widget="path")
    cache_mode: Literal["auto", "on", "off"] = setting(
        "auto", "Train from cached encodings? `auto`: yes when `python -m studio preprocess` has built a "
        "cache for this data; `on`: always (built first if missing); `off`: encode every step.",
        families=IMAGE_FAMILIES)
    cache_latents: bool = setting(True, "Cache VAE latents: training then never runs the VAE encoder.",
                                  families=IMAGE_FAMILIES, group="advanced")
    cache_text_embeds: bool = setting(True, "Cache text-encoder outputs: training then never runs the "
                                      "frozen text encoders (skipped with shuffled captions).",
                                      families=IMAGE_FAMILIES, group="advanced")
    stale_cache: Literal["refresh", "error"] = setting(
        "refresh", "When images, captions or settings changed since the cache was built: `refresh` "
        "re-encodes what changed before training; `error` stops and names what is out of date.",
        families=IMAGE_FAMILIES, group="advanced")
    compress_cache: bool = setting(False, "Compress cache files (gzip): smaller on disk, a little slower to "
                                   "build and read. Only files written afterwards are compressed.",
                                   families=IMAGE_FAMILIES, group="advanced")
    vae_batch_size: int = setting(1, "Images encoded together while caching. Higher is faster but needs "
                                  "more memory; lower it on out-of-memory.", ge=1, le=64,
                                  families=IMAGE_FAMILIES, group="advanced")

    def all_resolutions(self) -> list[int]:
        return list(self.resolutions) or [self.resolution]

    def problems(self, cfg) -> list[tuple[str, str]]:
        out = self._resolution_problems(cfg)
        if not self.caption_extension.startswith(".") or len(self.caption_extension) < 2:
            out.append(("data.caption_extension", f"must start with a dot, like '.txt' (got "
                        f"{self.caption_extension!r})"))
        prompts = [(self.caption_strategy, self.instance_prompt, "data")]
        prompts += [(d.caption_strategy, d.instance_prompt, f"data.datasets.{i}") for i, d in enumerate(self.datasets)]
        for strategy, prompt, where in prompts:
            if strategy == "instanceprompt" and not (prompt.strip() or self.instance_prompt.strip()):
                out.append((f"{where}.instance_prompt", "required with caption_strategy 'instanceprompt'"))
        for i, folder in enumerate(self.datasets):
            if not folder.path.strip():
                out.append((f"data.datasets.{i}.path", "required: an image folder"))
        if self.crop and self.crop_aspect in ("closest", "random") and not self.crop_aspect_buckets:
            out.append(("data.crop_aspect_buckets", f"needs at least one aspect ratio with crop_aspect "
                        f"'{self.crop_aspect}'"))
        if any(a <= 0 for a in self.crop_aspect_buckets):
            out.append(("data.crop_aspect_buckets", "aspect ratios must be > 0 (width / height)"))
        if self.min_image_side > self.max_image_side:
            out.append(("data.min_image_side", f"must not exceed data.max_image_side ({self.max_image_side})"))
        return out

    def _resolution_problems(self, cfg) -> list[tuple[str, str]]:
        out = []
        res = self.all_resolutions()
        for r in self.resolutions:
            if r < 64 or r > 4096 or r % 8:
                out.append(("data.resolutions", f"each resolution must be a multiple of 8 in 64-4096 (got {r})"))
        if self.bucket_step % 8:
            out.append(("data.bucket_step", f"must be a multiple of 8 (got {self.bucket_step})"))
        if self.batch_size_per_resolution and len(self.batch_size_per_resolution) != len(res):
            out.append(("data.batch_size_per_resolution", f"needs one batch size per resolution ({len(res)}), "
                        f"got {len(self.batch_size_per_resolution)}"))
        if any(b < 1 for b in self.batch_size_per_resolution):
            out.append(("data.batch_size_per_resolution", "batch sizes must be >= 1"))
        if self.progressive_resolution and len(res) < 2:
            out.append(("data.progressive_resolution", "needs two or more entries in data.resolutions"))
        fractions = self.progressive_fractions
        if fractions:
            if len(fractions) != len(res):
                out.append(("data.progressive_fractions", f"needs one fraction per resolution ({len(res)}), "
                            f"got {len(fractions)}"))
            elif any(f < 0 or f > 1 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
                out.append(("data.progressive_fractions", f"each must be in 0-1 and they must add up to 1.0 "
                            f"(they add up to {sum(fractions):g})"))
        lo, hi = self.min_bucket_resolution, self.max_bucket_resolution
        if lo and hi and lo > hi:
            out.append(("data.min_bucket_resolution", f"must not exceed data.max_bucket_resolution ({hi})"))
        if lo and lo > min(res):
            out.append(("data.min_bucket_resolution", f"must not exceed the smallest resolution ({min(res)})"))
        if hi and hi < max(res):
            out.append(("data.max_bucket_resolution", f"must be at least the largest resolution ({max(res)})"))
        return out
