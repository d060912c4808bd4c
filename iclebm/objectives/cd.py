"""Contrastive divergence (paper, Fig. 2): chain starts, Langevin negatives for every position at once,
the vectorised loss, and the paper's loop forms that tests and the bench compare against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from iclebm.dynamics.langevin import langevin_cached
from iclebm.models.energy import EnergyTransformer

if TYPE_CHECKING:
    from iclebm.training.config import TrainConfig


@dataclass
class CDBatch:
    """One contrastive-divergence update's data (densities, and regression with y-only negatives)."""

    seq: torch.Tensor  # (B, N, 2) the real sequences
    negatives: torch.Tensor  # (B, N, C, 2) Langevin negatives of every position and chain


def chain_init(
    seq_all: torch.Tensor, n_positions: int, chains: int, data_frac: float,
    box: tuple[float, float], generator: torch.Generator,
) -> torch.Tensor:
    """Starting points (B, N, C, 2) for the negatives of positions n = 0..N-1.

    seq_all: (B, N + extra, 2) points of each task. A chain of position n starts at a
    uniformly chosen point x_m with n <= m < N + extra with probability data_frac,
    else uniform over the box.
    """
    b, total, _ = seq_all.shape
    n = n_positions
    lo, hi = box
    uniform = lo + (hi - lo) * torch.rand(b, n, chains, 2, generator=generator, dtype=seq_all.dtype)
    pos = torch.arange(n, dtype=seq_all.dtype)[None, :, None]  # (1, N, 1)
    u = torch.rand(b, n, chains, generator=generator, dtype=seq_all.dtype)
    idx = (pos + u * (total - pos)).long().clamp_max(total - 1)  # m in [n, total)
    data = torch.gather(seq_all, 1, idx.reshape(b, -1, 1).expand(-1, -1, 2)).reshape(b, n, chains, 2)
    use_data = torch.rand(b, n, chains, 1, generator=generator) < data_frac
    return torch.where(use_data, data, uniform)


def cd_loss(
    model: EnergyTransformer, seq: torch.Tensor, negatives: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Contrastive-divergence loss for seq (B, N, 2) and negatives (B, N, C, 2), vectorised."""
    n = seq.shape[1]
    cache = model.encode_context(seq)  # one context pass gives the real energies and the cache
    f_real = cache.learned  # (B, N)
    f_neg = model.learned_energy_cached(negatives, cache, torch.arange(n))  # (B, N, C)
    e_real = f_real + model.base_energy(seq)
    e_neg = f_neg + model.base_energy(negatives)
    cd = e_real.mean() - e_neg.mean()
    loss = cd + alpha * ((f_real**2).mean() + (f_neg**2).mean())
    return loss, {"cd": cd.item(), "e_real": e_real.mean().item(), "e_neg": e_neg.mean().item()}


def cd_loss_reference(
    model: EnergyTransformer, seq: torch.Tensor, negatives: torch.Tensor, alpha: float
) -> torch.Tensor:
    """The paper's loop form: one full forward per position x chain. For tests and bench."""
    b, n, c, _ = negatives.shape
    f_real = model.learned_energies(seq)
    f_neg = torch.zeros(b, n, c, dtype=seq.dtype, device=seq.device)
    for pos in range(n):
        for ch in range(c):
            s = seq[:, : pos + 1].clone()
            s[:, -1] = negatives[:, pos, ch]
            f_neg[:, pos, ch] = model.learned_energies(s)[:, -1]
    e_real = f_real + model.base_energy(seq)
    e_neg = f_neg + model.base_energy(negatives)
    return e_real.mean() - e_neg.mean() + alpha * ((f_real**2).mean() + (f_neg**2).mean())


def sample_negatives(
    model: EnergyTransformer, seq: torch.Tensor, init: torch.Tensor, cfg: TrainConfig,
    generator: torch.Generator | list[torch.Generator],
) -> torch.Tensor:
    """Langevin negatives for every position and chain at once. init: (B, N, C, 2).

    generator: one for the batch, or one per task (row b's noise from generator b)."""
    with torch.no_grad():
        cache = model.encode_context(seq)
    return langevin_cached(
        model, cache, init, cfg.langevin_steps, cfg.step_size, cfg.noise_std, cfg.grad_clip_x,
        lengths=torch.arange(seq.shape[1]), box=cfg.box, generator=generator,
    )


def sample_negatives_reference(
    model: EnergyTransformer, seq: torch.Tensor, init: torch.Tensor, cfg: TrainConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """The reference's per-position x per-chain Langevin loop (full re-run each step)."""
    b, n, c, _ = init.shape
    out = torch.empty_like(init)
    for pos in range(n):
        for ch in range(c):
            x = init[:, pos, ch].clone()
            for _ in range(cfg.langevin_steps):
                x.requires_grad_(True)
                s = torch.cat([seq[:, :pos], x[:, None]], dim=1)
                (g,) = torch.autograd.grad(model.energies(s)[:, -1].sum(), x)
                with torch.no_grad():
                    norm = g.norm(dim=-1, keepdim=True)
                    g = g * (cfg.grad_clip_x / norm.clamp_min(cfg.grad_clip_x))
                    noise = torch.randn(x.shape, generator=generator).to(x.device)
                    x = x - cfg.step_size * g + cfg.noise_std * noise
                    x = x.clamp(*cfg.box)
            out[:, pos, ch] = x.detach()
    return out
