"""Per-timestep loss weights from the signal-to-noise ratio (FIELDS L03/L04).

Min-SNR-gamma (Hang et al. 2023, arXiv 2303.09556): weight = min(SNR, gamma), divided by SNR for an
epsilon-predicting model and by SNR + 1 for a v-predicting one, as in diffusers' training examples.
Soft min-SNR replaces the hard minimum by the smooth one, 1 / (1/SNR + 1/gamma) = SNR * gamma /
(SNR + gamma), the "soft-min-snr" weighting introduced with the Hourglass Diffusion Transformer
(Crowson et al. 2024, arXiv 2401.11605): no kink where SNR crosses gamma, and every timestep keeps
some weight below gamma instead of being capped flat.
"""
from __future__ import annotations

import torch


def snr_loss_weights(snr: torch.Tensor, gamma: float, prediction_type: str, soft: bool = False) -> torch.Tensor:
    capped = snr * gamma / (snr + gamma) if soft else snr.clamp(max=gamma)
    return capped / snr if prediction_type == "epsilon" else capped / (snr + 1)
