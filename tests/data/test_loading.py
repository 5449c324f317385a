"""DataLoader options (FIELDS §9), worker-independent batches and the dataset fingerprint."""
from __future__ import annotations

import os

import torch

from studio.data.image_source import build_image_dataset
from studio.families.sd import SdFamily
from studio.train.setup import loader_options
from tests.data.conftest import add_image, data_config


def test_platform_defaults_and_pin_memory_off_on_cpu(tmp_path):
    cfg = data_config(tmp_path)
    cfg.dataloader.num_workers = None
    opts = loader_options(cfg, torch.device("cpu"))
    assert opts["num_workers"] == min(4, os.cpu_count() or 1) and opts["pin_memory"] is False
    assert opts["prefetch_factor"] == 2 and opts["persistent_workers"] is True
    cfg.dataloader.pin_memory, cfg.dataloader.num_workers, cfg.dataloader.prefetch_factor = True, 1, 3
    opts = loader_options(cfg, torch.device("cpu"))
    assert opts["pin_memory"] is False and opts["prefetch_factor"] == 3  # pinning is useless without CUDA
    cfg.dataloader.num_workers = 0
    assert set(loader_options(cfg, torch.device("cpu"))) == {"num_workers", "pin_memory"}


def test_batches_do_not_depend_on_the_worker_count(good_folder):
    cfg = data_config(good_folder, random_flip=True, crop=True, crop_style="random", crop_aspect="preserve")
    dataset = build_image_dataset(cfg)
    collate = SdFamily(cfg, torch.device("cpu"), torch.float32).collate

    def epoch_pixels(workers: int) -> list[torch.Tensor]:
        sampler = dataset.batch_sampler(cfg)
        sampler.set_epoch(2)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
        return [b["pixel_values"] for b in loader]

    single, parallel = epoch_pixels(0), epoch_pixels(2)
    assert len(single) == len(parallel) and all(torch.equal(a, b) for a, b in zip(single, parallel))


def test_fingerprint_follows_content_and_captions_not_timestamps(good_folder):
    cfg = data_config(good_folder)
    first = build_image_dataset(cfg).fingerprint()
    os.utime(good_folder / "img0.png", (1, 1))
    assert build_image_dataset(cfg).fingerprint() == first
    (good_folder / "img0.txt").write_text("another caption", encoding="utf-8")
    second = build_image_dataset(cfg).fingerprint()
    add_image(good_folder, "img1.png", 80, 80, caption="picture number 1", seed=123)
    assert len({first, second, build_image_dataset(cfg).fingerprint()}) == 3
