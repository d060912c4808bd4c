"""Langevin sampling: stationary moments on a known quadratic energy, trajectories, box, input checks."""

from __future__ import annotations

import pytest
import torch
from lib_helpers import random_model, zero_head_model

from iclebm.dynamics.langevin import SamplerConfig, clip_norm, langevin, langevin_cached, uniform_init


def test_zero_head_model_is_the_quadratic_base():
    model = zero_head_model(base_std=2.0)
    x = torch.randn(1, 9, 2, dtype=torch.float64)
    ctx = torch.randn(1, 5, 2, dtype=torch.float64)
    assert torch.allclose(model.energy(x, ctx), (x * x).sum(-1) / 8.0, atol=1e-12)


@pytest.mark.slow  # minutes of training / sampling on 2 cores
def test_langevin_on_quadratic_reaches_mean_and_variance():
    """E = |x|^2 / (2 s^2): x <- x - eps x / s^2 + sqrt(2 eps) z is stationary at N(0, v I) with
    v = 2 eps / (1 - (1 - eps / s^2)^2) = s^2 / (1 - eps / (2 s^2)) (the discretisation bias)."""
    s, eps = 2.0, 0.2
    model = zero_head_model(base_std=s)
    ctx = torch.randn(1, 3, 2, dtype=torch.float64)
    init = torch.full((2000, 2), 3.0, dtype=torch.float64)  # start far from the mean
    g = torch.Generator().manual_seed(0)
    x = langevin(model, ctx, init, steps=200, step_size=eps, noise_std=(2 * eps) ** 0.5, generator=g)
    assert x.shape == (2000, 2)
    v_theory = s**2 / (1 - eps / (2 * s**2))
    assert x.mean(0).abs().max() < 0.15  # standard error ~ 0.045
    var = float(x.var(0).mean())  # pooled over both axes: standard error ~ 3%
    assert abs(var - v_theory) / v_theory < 0.1
    assert abs(var - s**2) / s**2 < 0.12


def test_return_trajectory_shapes_and_consistency():
    model = random_model(dtype=torch.float32)
    ctx = torch.randn(4, 2)
    init = torch.randn(7, 2)
    traj = langevin(
        model,
        ctx,
        init,
        5,
        0.05,
        0.3,
        grad_clip=20.0,
        return_trajectory=True,
        generator=torch.Generator().manual_seed(1),
    )
    assert traj.shape == (6, 7, 2)
    assert torch.equal(traj[0], init)
    final = langevin(
        model, ctx, init, 5, 0.05, 0.3, grad_clip=20.0, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(traj[-1], final)
    # batched
    traj_b = langevin(model, torch.randn(3, 4, 2), torch.randn(3, 7, 2), 2, 0.05, 0.3, return_trajectory=True)
    assert traj_b.shape == (3, 3, 7, 2)
    # one context shared by a batch of inits
    assert langevin(model, ctx, torch.randn(2, 5, 2), 1, 0.05, 0.3).shape == (2, 5, 2)


def test_zero_steps_returns_init_and_box_clamps():
    model = zero_head_model(base_std=100.0, dtype=torch.float32)
    init = uniform_init(300, (-1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(langevin(model, torch.zeros(0, 2), init, 0, 0.1, 1.0), init)
    x = langevin(
        model,
        torch.zeros(2, 2),
        init,
        20,
        0.01,
        1.0,
        box=(-1.0, 1.0),
        generator=torch.Generator().manual_seed(0),
    )
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert (x.abs() == 1.0).any()  # the large noise pushed some particles onto the walls


def test_noise_free_step_follows_clipped_gradient():
    model = random_model()
    ctx = torch.randn(1, 4, 2, dtype=torch.float64)
    init = 5 * torch.randn(1, 6, 2, dtype=torch.float64)
    q = init.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.energy(q, ctx).sum(), q)
    out = langevin(model, ctx, init, 1, 0.1, 0.0, grad_clip=0.5)
    assert torch.allclose(out, init - 0.1 * clip_norm(grad, 0.5), atol=1e-12)
    assert clip_norm(grad, 0.5).norm(dim=-1).max() <= 0.5 + 1e-12


def test_langevin_cached_per_prefix_groups():
    """Group p moves on E(. | context[:, :lengths[p]]): noise-free, one step, vs the gradient of energy()."""
    model = random_model(seed=3)
    ctx = torch.randn(2, 5, 2, dtype=torch.float64)
    lengths = torch.tensor([0, 3, 5])
    init = torch.randn(2, 3, 4, 2, dtype=torch.float64)
    out = langevin_cached(model, model.encode_context(ctx), init, 1, 0.2, 0.0, lengths=lengths)
    for p, k in enumerate(lengths.tolist()):
        q = init[:, p].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.energy(q, ctx[:, :k]).sum(), q)
        assert torch.allclose(out[:, p], init[:, p] - 0.2 * g, atol=1e-12)


def test_langevin_does_not_touch_parameter_gradients():
    model = random_model(dtype=torch.float32)
    langevin(model, torch.randn(3, 2), torch.randn(5, 2), 3, 0.05, 0.3)
    assert all(p.grad is None for p in model.parameters())


def test_langevin_input_checks():
    model = random_model(dtype=torch.float32)
    ctx = torch.randn(3, 2)
    with pytest.raises(ValueError, match="init is empty"):
        langevin(model, ctx, torch.zeros(0, 2), 1, 0.1, 0.1)
    with pytest.raises(ValueError, match="NaN or inf"):
        langevin(model, ctx, torch.tensor([[float("nan"), 0.0]]), 1, 0.1, 0.1)
    with pytest.raises(ValueError, match="init must have shape"):
        langevin(model, ctx, torch.zeros(4, 3), 1, 0.1, 0.1)
    with pytest.raises(ValueError, match="steps"):
        langevin(model, ctx, torch.zeros(4, 2), -1, 0.1, 0.1)
    with pytest.raises(ValueError, match="non-negative"):
        langevin(model, ctx, torch.zeros(4, 2), 1, -0.1, 0.1)
    with pytest.raises(ValueError, match="context contains NaN"):
        langevin(model, torch.tensor([[float("inf"), 0.0]]), torch.zeros(4, 2), 1, 0.1, 0.1)


def test_sampler_config_round_trip():
    cfg = SamplerConfig(steps=150, step_size=0.1, noise_std=0.2, grad_clip=None)
    assert SamplerConfig.from_dict(cfg.to_dict()) == cfg
    assert SamplerConfig.from_dict(SamplerConfig().to_dict()) == SamplerConfig()
