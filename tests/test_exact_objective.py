"""The exact-likelihood objective: grid-normalised NLL, checked against evaluate's independent grid sum."""

from __future__ import annotations

import math

import pytest
import torch
from lib_helpers import random_model

from iclebm.evaluation.density import model_log_z
from iclebm.grid import grid_points, jittered_grid
from iclebm.models.energy import EnergyConfig
from iclebm.objectives.exact import (
    KernelDraws,
    draw_positions,
    exact_nll_loss,
    importance_log_z,
    kernel_log_density,
    proposal_points,
)
from iclebm.training.config import TrainConfig
from iclebm.training.trainer import Trainer

BOX = (-6.0, 6.0)


def independent_nll(model, seq: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, N) NLL_n = E(x_n | x_<n) + log Z_n: plain causal forward + evaluate's cell-centre grid."""
    n = seq.shape[1]
    log_z = model_log_z(model, seq, list(range(n)), BOX, resolution)  # (B, N), float64 inside
    return model.energies(seq).double() + log_z


def test_jittered_grid_at_half_offset_is_the_evaluation_grid():
    grid, area = jittered_grid(BOX, 7, torch.full((3, 2), 0.5, dtype=torch.float64))
    ref, ref_area = grid_points(BOX, 7)
    assert grid.shape == (3, 49, 2) and area == pytest.approx(ref_area)
    for b in range(3):
        assert torch.allclose(grid[b], ref, atol=1e-12)
    low, _ = jittered_grid(BOX, 7, torch.zeros(1, 2, dtype=torch.float64))
    high, _ = jittered_grid(BOX, 7, torch.full((1, 2), 0.999, dtype=torch.float64))
    assert float(low.min()) == BOX[0] and float(high.max()) < BOX[1]


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_loss_equals_independent_grid_nll(seed):
    model = random_model(seed=seed, base_std=2.0)
    g = torch.Generator().manual_seed(seed)
    seq = 3 * torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    res = 23
    grid, area = jittered_grid(BOX, res, torch.full((3, 2), 0.5, dtype=torch.float64))
    loss, stats = exact_nll_loss(model, seq, grid, area)
    ref = independent_nll(model, seq, res)
    assert loss.item() == pytest.approx(float(ref.mean()), abs=1e-9)
    assert stats["nll"] == pytest.approx(float(ref.mean()), abs=1e-9)
    pos = torch.tensor([0, 2, 5])
    sub, _ = exact_nll_loss(model, seq, grid, area, pos)
    assert sub.item() == pytest.approx(float(ref[:, pos].mean()), abs=1e-9)


def test_exact_loss_with_length_scales_and_shifted_grid():
    """Calibrated models too: the loss normalises the total energy; a per-task shifted grid is
    a plain Riemann sum over the shifted points."""
    model = random_model(seed=3, base_std=2.0)
    model.config.length_scales = [0.5, 0.7, 0.9, 1.1]
    seq = 2 * torch.randn(2, 5, 2, dtype=torch.float64)
    offset = torch.tensor([[0.1, 0.8], [0.6, 0.3]], dtype=torch.float64)
    grid, area = jittered_grid(BOX, 11, offset)
    loss, _ = exact_nll_loss(model, seq, grid, area)
    per_task = []
    for b in range(2):
        e_real = model.energies(seq[b : b + 1])[0]  # (N,)
        for n in range(5):
            e_grid = model.energy(grid[b : b + 1], seq[b : b + 1, :n])[0]
            per_task.append(e_real[n] + torch.logsumexp(-e_grid, 0) + math.log(area))
    assert loss.item() == pytest.approx(float(torch.stack(per_task).mean()), abs=1e-9)


def test_exact_gradient_matches_independent():
    model = random_model(seed=4, base_std=2.0)
    seq = 2 * torch.randn(2, 4, 2, dtype=torch.float64)
    grid, area = jittered_grid(BOX, 9, torch.full((2, 2), 0.5, dtype=torch.float64))
    loss, _ = exact_nll_loss(model, seq, grid, area)
    g1 = torch.autograd.grad(loss, [model.head.weight])[0]
    e_real = model.energies(seq)
    e_grid = torch.stack([model.energy(grid, seq[:, :n]) for n in range(4)], 1)  # (B, N, G)
    ref = (e_real + torch.logsumexp(-e_grid, -1) + math.log(area)).mean()
    g2 = torch.autograd.grad(ref, [model.head.weight])[0]
    assert torch.allclose(g1, g2, atol=1e-9)


def test_trainer_with_exact_objective_steps_and_validates():
    cfg = TrainConfig(batch_size=2, context_len=6, objective="exact", grid_resolution=8, exact_positions=3,
                      warmup=1, seed=1)
    trainer = Trainer(config=cfg, model_config=EnergyConfig(n_layer=1, n_head=2, d_model=8, max_context=8))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for _ in range(2):
        m = trainer.step()
        assert math.isfinite(m["loss"]) and not m["skipped"] and m["nll"] == m["loss"]
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="ml")
    with pytest.raises(ValueError, match="grid_resolution"):
        TrainConfig(objective="exact", grid_resolution=1)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_short_bias_oversamples_short_prefixes_and_uniform_replays_the_permutation():
    g = torch.Generator().manual_seed(3)
    uniform = draw_positions(64, 8, 0.0, g)
    plain = torch.randperm(64, generator=torch.Generator().manual_seed(3))[:8].sort().values
    assert torch.equal(uniform, plain)
    counts = torch.zeros(64)
    for _ in range(400):
        pos = draw_positions(64, 8, 1.0, g)
        assert len(set(pos.tolist())) == 8 and torch.equal(pos, pos.sort().values)
        counts[pos] += 1
    # bias 1: positions 0..8 get about 60% of the draws (uniform: 14%); 0 is drawn far more than 63
    assert counts[:9].sum() / counts.sum() > 0.4 and counts[0] > 5 * counts[63]
    with pytest.raises(ValueError, match="positions"):
        draw_positions(4, 5, 1.0, g)
    with pytest.raises(ValueError, match="short_bias"):
        TrainConfig(short_bias=-1.0)
    cfg = TrainConfig(batch_size=2, context_len=6, objective="exact", grid_resolution=4, exact_positions=2,
                      short_bias=1.0, warmup=1, seed=1)
    trainer = Trainer(config=cfg, model_config=EnergyConfig(n_layer=1, n_head=2, d_model=8, max_context=8))
    assert math.isfinite(trainer.step()["loss"])
    assert TrainConfig.from_dict(cfg.to_dict()).short_bias == 1.0


# ---- importance points around the context (kernel_points > 0) ---------------------------------


def test_kernel_log_density_is_the_mixture_it_samples_from():
    """Brute force: q_p(x) = (N(0, S^2) + sum_{i < n_p} N(x_i, s^2)) / (n_p + 1), and it integrates to 1."""
    g = torch.Generator().manual_seed(0)
    seq = 2 * torch.randn(1, 5, 2, generator=g, dtype=torch.float64)
    pos = torch.tensor([0, 2, 5])
    x = 3 * torch.randn(1, 3, 7, 2, generator=g, dtype=torch.float64)
    got = kernel_log_density(x, seq, pos, 0.4, 2.5)

    def normal(x, mu, s):
        return math.exp(-((x - mu) ** 2).sum().item() / (2 * s * s)) / (2 * math.pi * s * s)

    for p, n in enumerate(pos.tolist()):
        for m in range(7):
            q = normal(x[0, p, m], torch.zeros(2, dtype=torch.float64), 2.5)
            q += sum(normal(x[0, p, m], seq[0, i], 0.4) for i in range(n))
            assert got[0, p, m].item() == pytest.approx(math.log(q / (n + 1)), abs=1e-12)
    # draws follow that density: their mean is the mixture mean (broad kernel at the origin)
    draws = proposal_points(seq, pos, 20000, 0.4, 2.5, torch.Generator().manual_seed(1))
    for p, n in enumerate(pos.tolist()):
        mean = seq[0, :n].sum(0) / (n + 1)
        assert torch.allclose(draws[0, p].mean(0), mean, atol=0.06)


def test_importance_log_z_is_unbiased_for_z():
    """Averaged over many draws, exp(log Z_hat) is the fine-grid Z of a trained-like energy; with no
    kernel points it is the plain grid sum."""
    model = random_model(seed=5, base_std=2.0)
    g = torch.Generator().manual_seed(2)
    seq = 2 * torch.randn(1, 4, 2, generator=g, dtype=torch.float64)
    pos = torch.tensor([0, 3])
    z_ref = torch.exp(model_log_z(model, seq, [0, 3], BOX, 400))[0]  # (2,)
    cache = model.encode_context(seq)
    est = []
    for _ in range(300):
        grid, _ = jittered_grid(BOX, 4, torch.rand(1, 2, generator=g, dtype=torch.float64))
        kern = proposal_points(seq, pos, 8, 0.5, 3.0, g)
        with torch.no_grad():
            e_grid = model.energy_cached(grid[:, None], cache, pos)
            e_kern = model.energy_cached(kern, cache, pos)
        est.append(torch.exp(importance_log_z(e_grid, grid, e_kern, kern, seq, pos, BOX, 0.5, 3.0))[0])
    mean = torch.stack(est).mean(0)
    assert torch.allclose(mean, z_ref, rtol=0.03), (mean, z_ref)
    grid, area = jittered_grid(BOX, 9, torch.full((1, 2), 0.5, dtype=torch.float64))
    with torch.no_grad():
        e_grid = model.energy_cached(grid[:, None], cache, pos)
    plain = importance_log_z(e_grid, grid, e_grid[:, :, :0], grid[:, None, :0].expand(-1, 2, -1, -1),
                             seq, pos, BOX, 0.5, 3.0)
    assert torch.allclose(plain, torch.logsumexp(-e_grid, -1) + math.log(area), atol=1e-12)


def test_importance_loss_matches_brute_force_and_trains():
    model = random_model(seed=6, base_std=2.0)
    g = torch.Generator().manual_seed(3)
    seq = 2 * torch.randn(2, 5, 2, generator=g, dtype=torch.float64)
    pos = torch.tensor([1, 4])
    grid, area = jittered_grid(BOX, 5, torch.rand(2, 2, generator=g, dtype=torch.float64))
    kern = torch.cat([proposal_points(seq[b : b + 1], pos, 6, 0.5, 3.0, g) for b in range(2)])
    kern[0, 0, 0] = torch.tensor([50.0, 0.0], dtype=torch.float64)  # outside the box: contributes 0
    loss, _ = exact_nll_loss(model, seq, grid, area, pos, KernelDraws(kern, BOX, 0.5, 3.0))
    terms = []
    for b in range(2):
        e_real = model.energies(seq[b : b + 1])[0]
        for p, n in enumerate(pos.tolist()):
            total = 0.0
            pts = list(grid[b]) + [k for k in kern[b, p] if bool(((k >= BOX[0]) & (k < BOX[1])).all())]
            for x in pts:
                e = model.energy(x[None, None], seq[b : b + 1, :n])[0, 0]
                q = kernel_log_density(x[None, None, None], seq[b : b + 1], torch.tensor([n]), 0.5, 3.0).exp()
                total += torch.exp(-e) / (25 / (BOX[1] - BOX[0]) ** 2 + 6 * q[0, 0, 0])
            terms.append(e_real[n] + torch.log(total))
    assert loss.item() == pytest.approx(float(torch.stack(terms).mean()), abs=1e-9)
    cfg = TrainConfig(batch_size=2, context_len=6, objective="exact", grid_resolution=4, exact_positions=3,
                      kernel_points=5, warmup=1, seed=1)
    trainer = Trainer(config=cfg, model_config=EnergyConfig(n_layer=1, n_head=2, d_model=8, max_context=8))
    for _ in range(2):
        m = trainer.step()
        assert math.isfinite(m["loss"]) and not m["skipped"]
    with pytest.raises(ValueError, match="kernel_points"):
        TrainConfig(kernel_points=-1)
