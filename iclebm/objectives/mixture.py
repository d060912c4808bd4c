"""The exact NLL of the mixture-density peer: its density is normalised by construction."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iclebm.models.mixture import MixtureDensityTransformer


@dataclass
class MixtureBatch:
    """One update's data for the mixture-density peer: sequences only (no grid, no negatives)."""

    seq: torch.Tensor  # (B, N, 2)


def nll_loss(model: MixtureDensityTransformer, seq: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean -log p(x_n | x_<n) over all B x N positions of seq (B, N, 2): one causal pass."""
    nll = model.energies(seq)  # (B, N)
    loss = nll.mean()
    # e_real (the mean energy of real points) is the NLL itself: the live chart's real-energy line
    stats = {"nll": loss.item(), "e_real": loss.item(), "nll_first": nll[:, 0].mean().item(),
             "nll_last": nll[:, -1].mean().item()}
    return loss, stats
