"""Langevin temperature: noise = sqrt(2 step T) samples exp(-E / T); on a known Gaussian energy the
chains' variance is that of p itself at T = 1 and of the sharpened p^(1/T) otherwise."""

from __future__ import annotations

import math

import pytest
import torch

from iclebm.dynamics.langevin import langevin_energy, noise_for_temperature, temperature_of


def test_noise_for_temperature_one_is_sqrt_two_step():
    assert noise_for_temperature(0.05) == pytest.approx(math.sqrt(0.1))
    assert noise_for_temperature(0.1, 0.2) == pytest.approx(0.2)  # the shipped cards' sampler
    assert noise_for_temperature(0.3, 2.0) == pytest.approx(math.sqrt(1.2))


def test_temperature_of_inverts_noise_for_temperature():
    assert temperature_of(0.1, 0.2) == pytest.approx(0.2)  # step 0.1, noise 0.2 samples p^5
    assert temperature_of(0.05, 0.316) == pytest.approx(0.9986, abs=1e-3)
    for step, t in [(0.01, 1.0), (0.2, 0.5), (0.7, 3.0)]:
        assert temperature_of(step, noise_for_temperature(step, t)) == pytest.approx(t)
    assert temperature_of(0.1, 0.0) == 0.0  # no noise: gradient descent


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_arguments_are_checked(bad):
    with pytest.raises(ValueError, match="step_size"):
        noise_for_temperature(bad, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        noise_for_temperature(0.1, bad)
    with pytest.raises(ValueError, match="step_size"):
        temperature_of(bad, 0.1)


@pytest.mark.parametrize("temperature", [1.0, 0.25, 2.0])
def test_gaussian_energy_variance_matches_p_to_the_one_over_t(temperature):
    """E = |x|^2 / (2 s^2), p = N(0, s^2 I); p^(1/T) = N(0, T s^2 I). The update
    x <- (1 - h / s^2) x + sqrt(2 h T) z is stationary at variance T s^2 / (1 - h / (2 s^2))."""
    s, h = 1.5, 0.02
    g = torch.Generator().manual_seed(0)
    init = torch.zeros(4000, 2, dtype=torch.float64)
    x = langevin_energy(lambda q: (q * q).sum(-1) / (2 * s * s), init, steps=600, step_size=h,
                        noise_std=noise_for_temperature(h, temperature), generator=g)
    var = float(x.var(0).mean())  # pooled over both axes: standard error ~ 2%
    assert var == pytest.approx(temperature * s * s / (1 - h / (2 * s * s)), rel=0.07)
    assert var == pytest.approx(temperature * s * s, rel=0.08)  # i.e. p^(1/T) itself
    if temperature != 1.0:
        assert abs(var - s * s) / (s * s) > 0.5  # and clearly not p


def test_langevin_energy_trajectory_and_box():
    g = torch.Generator().manual_seed(1)
    init = torch.full((5, 2), 3.0)
    traj = langevin_energy(lambda q: -(q * q).sum(-1), init, steps=4, step_size=0.5, noise_std=0.0,
                           box=(-4.0, 4.0), generator=g, return_trajectory=True)
    assert traj.shape == (5, 5, 2)
    assert torch.equal(traj[0], init)
    assert float(traj.abs().max()) == 4.0  # pushed outwards, held at the box edge
