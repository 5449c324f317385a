"""`data` section (FIELDS §3). The minimal image path: a folder of images with same-name captions."""
from __future__ import annotations

from typing import Literal

from studio.config.fields import IMAGE_FAMILIES, Section, setting


class DataSection(Section):
    path: str = setting("", "Training data: a folder of images with captions (image families), a "
                        "folder of songs (music), or a JSONL / text file (causal LM).", widget="path")
    eval_path: str = setting("", "Optional separate evaluation data, same format as the training data. "
                             "Leave empty to hold out `eval_split_ratio` of the training data instead.",
                             group="advanced", widget="path")
    eval_split_ratio: float = setting(0.0, "Share of the training data held out for evaluation "
                                      "(0.1 = 10 %). The split is fixed by the seed. 0 = no split.",
                                      ge=0.0, lt=1.0, group="advanced", step=0.01)
    cache_dir: str = setting("", "Where cached latents and text embeddings are kept. Empty = a "
                             "`.studio_cache` folder inside the dataset folder.", group="advanced",
                             widget="path")
    resolution: int = setting(512, "Training resolution in pixels (square). Images are resized so the "
                              "short side matches, then cropped. 512 for SD 1.5, 1024 for SDXL.",
                              ge=64, le=4096, families=IMAGE_FAMILIES, step=64)
    caption_extension: str = setting(".txt", "Extension of the caption file next to each image "
                                     "(`photo.png` -> `photo.txt`).", families=IMAGE_FAMILIES,
                                     group="advanced")
    center_crop: bool = setting(True, "Crop the centre of each image after resizing; off = random crop "
                                "position each time (a mild augmentation).", families=IMAGE_FAMILIES,
                                group="advanced")
    random_flip: bool = setting(False, "Mirror images left-right at random. Doubles the variety of "
                                "poses; leave off for text, logos or asymmetric subjects.",
                                families=IMAGE_FAMILIES, group="advanced")
    max_samples: int = setting(0, "Use at most this many training items (for smoke tests or trimming a "
                               "huge set). 0 = use everything.", ge=0, le=10_000_000, group="advanced")
    shuffle: bool = setting(True, "Shuffle the order of items at every epoch.", group="advanced")
    on_bad_file: Literal["skip", "error"] = setting(
        "skip", "What to do with unreadable or invalid files found by the scan: `skip` trains on the rest "
        "and reports each one; `error` refuses to start.", group="advanced")
