"""Min-SNR and soft min-SNR loss weights (FIELDS L03/L04)."""
from __future__ import annotations

import pytest
import torch

from studio.config import ConfigError, load_config
from studio.families.snr_weighting import snr_loss_weights
from tests.conftest import REPO

SNR = torch.tensor([0.01, 1.0, 5.0, 25.0, 1000.0])


def test_hard_min_snr_matches_the_paper():
    eps = snr_loss_weights(SNR, 5.0, "epsilon")
    assert torch.allclose(eps, torch.minimum(SNR, torch.tensor(5.0)) / SNR)
    v = snr_loss_weights(SNR, 5.0, "v_prediction")
    assert torch.allclose(v, torch.minimum(SNR, torch.tensor(5.0)) / (SNR + 1))


def test_soft_min_snr_is_the_smooth_minimum():
    soft = snr_loss_weights(SNR, 5.0, "epsilon", soft=True)
    assert torch.allclose(soft, 5.0 / (SNR + 5.0))  # (SNR * g / (SNR + g)) / SNR
    hard = snr_loss_weights(SNR, 5.0, "epsilon")
    assert torch.all(soft <= hard) and float(soft[2]) == pytest.approx(0.5)  # half the hard cap where SNR = gamma
    assert torch.allclose(soft[[0, -1]], hard[[0, -1]], rtol=0.01)


def test_soft_min_snr_needs_gamma():
    with pytest.raises(ConfigError, match="snr_gamma"):
        load_config({"model": {"path": "tiny:sd15"}, "loss": {"use_soft_min_snr": True}})


def test_the_sd_loss_uses_it():
    from studio.families.base import build_family

    preset = str(REPO / "presets/tiny-sd15-lora.json")
    losses = []
    for soft in (False, True):
        cfg = load_config(preset, ["loss.snr_gamma=5", f"loss.use_soft_min_snr={str(soft).lower()}"])
        family = build_family(cfg, torch.device("cpu"), torch.float32)
        family.load()
        dataset = family.train_dataset()
        batch = family.collate([dataset[i] for i in range(2)])
        with torch.no_grad():
            losses.append(float(family.loss(batch, torch.Generator().manual_seed(7))))
    assert losses[1] < losses[0]  # the soft minimum is below the hard one at every timestep
