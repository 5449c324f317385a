"""Buckets, crops and the batch order: one shape per batch, deterministic by (seed, epoch), resumable."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from studio.data.buckets import BucketSpec, plan_crop
from studio.data.image_source import build_image_dataset
from studio.data.sampler import largest_remainder
from studio.families.sd import SdFamily
from tests.data.conftest import add_image, data_config


def loader(dataset, cfg):
    sampler = dataset.batch_sampler(cfg)
    collate = SdFamily(cfg, torch.device("cpu"), torch.float32).collate
    return sampler, torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)


def test_three_aspect_ratios_land_in_three_buckets_and_every_batch_has_one_shape(good_folder):
    cfg = data_config(good_folder)
    dataset = build_image_dataset(cfg)
    shapes = {dataset.items[v.item].path.name: v.plan.target for v in dataset.views}
    assert len(set(shapes.values())) == 3
    assert shapes["img0.png"] == shapes["img1.png"] == (64, 64)
    (lw, lh), (pw, ph) = shapes["img2.png"], shapes["img4.png"]
    assert lw > lh and (pw, ph) == (lh, lw) and shapes["img3.png"] == (lw, lh)
    sampler, data = loader(dataset, cfg)
    seen = 0
    for batch in data:
        assert batch["pixel_values"].shape[0] == len(batch["caption"])
        assert tuple(batch["pixel_values"].shape[2:]) == tuple(batch["target_size"][0].tolist())
        assert (batch["target_size"] == batch["target_size"][0]).all()
        seen += len(batch["caption"])
    assert seen == 6 and len(sampler) == 3


def test_bucket_shapes_respect_area_step_and_limits():
    spec = BucketSpec(512, 64, 256, 1024)
    for w, h in spec.shapes:
        assert w % 64 == 0 and h % 64 == 0 and 256 <= min(w, h) and max(w, h) <= 1024 and w * h <= 512 * 512
    assert spec.nearest(1.0) == (512, 512) and spec.nearest(1.5) == (640, 384)
    assert BucketSpec(512, 64, 256, 1024, no_upscale=True).for_image(300, 200) == (256, 192)
    pixel = BucketSpec(512, 64, 256, 1024, kind="pixel")
    assert pixel.nearest(2.0) == (1024, 512)


def test_crop_plans_cover_the_target():
    rng = np.random.default_rng(0)
    for style in ("center", "corner", "random"):
        plan = plan_crop(300, 200, (128, 128), style, rng)
        assert plan.resize == (192, 128) and plan.top == 0 and 0 <= plan.left <= 64
    assert plan_crop(300, 200, (128, 128), "center", rng).left == 32
    assert plan_crop(300, 200, (128, 128), "corner", rng).left == 64


def test_crop_square_puts_everything_in_one_bucket(good_folder):
    dataset = build_image_dataset(data_config(good_folder, crop=True, crop_aspect="square", crop_style="center"))
    assert {v.plan.target for v in dataset.views} == {(64, 64)}


def test_order_depends_only_on_seed_and_epoch_and_resume_skips(good_folder):
    cfg = data_config(good_folder)
    first = build_image_dataset(cfg).batch_sampler(cfg)
    second = build_image_dataset(cfg).batch_sampler(cfg)
    first.set_epoch(3), second.set_epoch(3)
    full = list(first)
    assert full == list(second)
    second.set_epoch(4)
    assert list(second) != full
    first.skip = 2 * cfg.training.batch_size  # the loop's convention: batches_done x batch size
    assert len(first) == len(full) - 2 and list(first) == full[2:]


def test_repeats_and_folder_weights_set_the_draws(good_folder, tmp_path):
    extra = tmp_path / "reg"
    for i in range(4):
        add_image(extra, f"reg{i}.png", 96, 96, caption="a regularisation picture", seed=20 + i)
    cfg = data_config(good_folder, repeats=3, datasets=[{"path": str(extra)}])
    dataset = build_image_dataset(cfg)
    sampler = dataset.batch_sampler(cfg)
    per_folder = Counter(dataset.items[dataset.views[v].item].folder for batch in sampler for v, _ in batch)
    assert per_folder == {0: 18, 1: 4}  # 6 images x 3 repeats, 4 x 1
    cfg = data_config(good_folder, datasets=[{"path": str(extra), "weight": 3.0}], dataset_sampling="uniform")
    sampler = build_image_dataset(cfg).batch_sampler(cfg)
    per_folder = Counter(dataset.items[dataset.views[v].item].folder for batch in sampler for v, _ in batch)
    assert per_folder == {0: 3, 1: 7}  # 10 draws split 1:3 by weight alone (largest remainder)
    assert largest_remainder(10, [1, 3]) == [3, 7]


def test_multi_resolution_batch_sizes_and_progressive_schedule(good_folder):
    cfg = data_config(good_folder, resolutions=[64, 128], batch_size_per_resolution=[3, 1],
                      progressive_resolution=True, progressive_fractions=[0.25, 0.75], shuffle=True)
    dataset = build_image_dataset(cfg)
    assert len(dataset) == 12
    sampler = dataset.batch_sampler(cfg)
    sampler.set_total_batches(2 * sampler.epoch_batches)  # a two-epoch run
    sizes = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        for batch in sampler:
            resolutions = {dataset.resolutions[dataset.views[v].res] for v, _ in batch}
            assert len(resolutions) == 1
            sizes.append((resolutions.pop(), len(batch)))
    boundary = sum(1 for g in range(len(sizes)) if g / len(sizes) < 0.25)  # the first quarter of the run
    assert {r for r, _ in sizes[:boundary]} == {64} and {r for r, _ in sizes[boundary:]} == {128}
    assert all(n <= 3 for r, n in sizes if r == 64) and all(n == 1 for r, n in sizes if r == 128)


def test_eval_split_is_deterministic_by_seed_and_max_samples_caps(good_folder):
    cfg = data_config(good_folder, eval_split_ratio=0.34)
    train, held = build_image_dataset(cfg, "train"), build_image_dataset(cfg, "eval")
    names = lambda ds: sorted(it.key for it in ds.items)  # noqa: E731
    assert len(held) == 2 and len(train) == 4 and not set(names(train)) & set(names(held))
    assert names(build_image_dataset(cfg, "eval")) == names(held)
    capped = build_image_dataset(data_config(good_folder, max_samples=4))
    assert len(capped.items) == 4


@pytest.mark.parametrize("alpha", [True, False])
def test_alpha_mask_becomes_a_latent_sized_loss_mask(tmp_path, alpha):
    folder = tmp_path / "alpha"
    path = add_image(folder, "cut.png", 64, 64, mode="RGBA" if alpha else "RGB")
    if alpha:
        from PIL import Image

        img = Image.open(path).convert("RGBA")
        img.putalpha(Image.new("L", (64, 64), 0).point(lambda _: 0))
        img.paste((255, 0, 0, 255), (0, 0, 32, 64))  # left half opaque, right half transparent
        img.save(path)
    item = build_image_dataset(data_config(folder, alpha_mask=True))[(0, 0)]
    mask = item["loss_mask"]
    assert mask.shape == (1, 8, 8)
    if alpha:
        assert mask[..., :4].min() == 1.0 and mask[..., 4:].max() == 0.0
    else:
        assert mask.min() == 1.0


def test_exif_rotated_photos_are_bucketed_and_loaded_upright(tmp_path):
    from PIL import Image

    from tests.data.conftest import picture

    folder = tmp_path / "phone"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    picture(128, 64).save(folder / "sideways.jpg", exif=exif.tobytes())  # stored landscape, shown portrait
    (folder / "sideways.txt").write_text("a phone photo", encoding="utf-8")
    dataset = build_image_dataset(data_config(folder))
    (tw, th) = dataset.views[0].plan.target
    assert th > tw and dataset.items[0].width == 64
    assert dataset[(0, 0)]["pixel_values"].shape == (3, th, tw)


def test_resolution_settings_are_checked_together(tmp_path):
    from studio.config import ConfigError

    with pytest.raises(ConfigError) as err:
        data_config(tmp_path, resolutions=[64, 128], batch_size_per_resolution=[2], progressive_resolution=True,
                    progressive_fractions=[0.5, 0.6], bucket_step=12)
    fields = err.value.by_field
    assert "add up to 1.0" in fields["data.progressive_fractions"] and "1.1" in fields["data.progressive_fractions"]
    assert "one batch size per resolution (2)" in fields["data.batch_size_per_resolution"]
    assert "multiple of 8" in fields["data.bucket_step"]
    with pytest.raises(ConfigError, match="data.progressive_resolution"):
        data_config(tmp_path, progressive_resolution=True)
