"""Per-context-length temperatures: exactness of the folded-in scales and a known-answer fit."""

from __future__ import annotations

import pytest
import torch
from lib_helpers import naive_energy, random_model, zero_head_model

from iclebm.evaluation.calibration import fit_length_scales
from iclebm.models.energy import EnergyConfig
from iclebm.tasks import MixturePrior


def test_length_scales_interpolate_between_knots() -> None:
    cfg = EnergyConfig(length_scales=[0.5, 1.0, 2.0])  # knots n = 0, 1, 2
    s = cfg.scale_for_lengths(torch.tensor([0, 1, 2, 10]))
    assert torch.allclose(s, torch.tensor([0.5, 1.0, 2.0, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="positive"):
        EnergyConfig(length_scales=[1.0, -1.0])


@pytest.mark.parametrize("n", [0, 1, 5])
def test_calibrated_cached_equals_naive(n: int) -> None:
    model = random_model(seed=3, length_scales=[0.4, 0.9, 1.3, 0.7, 1.1], energy_scale=1.7)
    g = torch.Generator().manual_seed(n)
    context = 3 * torch.randn(2, n, 2, generator=g, dtype=torch.float64)
    query = 3 * torch.randn(2, 7, 2, generator=g, dtype=torch.float64)
    cached = model.energy_all_prefixes(query, context)
    naive = torch.stack([naive_energy(model, query, context[:, :k]) for k in range(n + 1)], dim=1)
    assert torch.allclose(cached, naive, atol=1e-9, rtol=0)
    assert torch.allclose(model.energy(query, context), naive[:, -1], atol=1e-9, rtol=0)


def test_fit_recovers_known_temperature() -> None:
    # Learned part zero: E = |x|^2 / (2 b^2) whatever the context. Over held-out tasks the
    # data's marginal is the prior predictive N(0, (mean_std^2 + s^2) I), so the NLL-optimal
    # inverse temperature at every length is b^2 / (mean_std^2 + s^2).
    b, mean_std, comp = 2.0, 3.0, 0.5
    model = zero_head_model(base_std=b, dtype=torch.float32, max_context=8)
    model.card = {"task": MixturePrior(1, mean_std, comp, mean_limit=100.0).to_card(), "box": [-15, 15]}
    scales, report = fit_length_scales(model, n_knots=2, n_tasks=120, n_test=10, resolution=40)
    expected = b**2 / (mean_std**2 + comp**2)
    for s in scales:
        assert s == pytest.approx(expected, rel=0.25)  # 120 tasks: ~10% sampling error
    pairs = zip(report["val_nll_after"], report["val_nll_before"], strict=True)
    assert all(after <= before + 1e-9 for after, before in pairs)


def test_fit_refuses_a_calibrated_model() -> None:
    model = zero_head_model(dtype=torch.float32, length_scales=[1.0])
    model.card = {"task": MixturePrior().to_card(), "box": [-12, 12]}
    with pytest.raises(ValueError, match="uncalibrated"):
        fit_length_scales(model, n_knots=2, n_tasks=2)
