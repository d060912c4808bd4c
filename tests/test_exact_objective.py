"""The exact-likelihood objective: grid-normalised NLL, checked against evaluate's independent grid sum."""

from __future__ import annotations

import math

import pytest
import torch
from lib_helpers import random_model

from iclebm.evaluate import grid_points, model_log_z
from iclebm.model import EnergyConfig
from iclebm.training import TrainConfig, Trainer, exact_nll_loss, jittered_grid

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
