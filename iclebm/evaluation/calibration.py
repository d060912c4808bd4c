"""Post-training calibration: per-context-length temperatures and the default sampler.

Contrastive divergence with short Langevin chains does not pin down the overall
sharpness of exp(-E); it is typically right only up to a temperature, and that
temperature depends on how much context the model reads. So after training we fit
an inverse temperature s_n for n = 0, 1, 2, 4, ... on validation tasks (held out from
the evaluation tasks) and fold them into the model (`EnergyConfig.length_scales`),
so every API returns the calibrated energy.

For each knot n the validation NLL  s * mean E(test) + log sum_grid exp(-s E) + log area
is convex in s; the energies are computed once and each s_n is a 1-D bounded search.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from iclebm.dynamics.langevin import SamplerConfig
from iclebm.evaluation.density import DEFAULT_NS, eval_mode, guidance_fraction, resolve_prior_and_box
from iclebm.grid import grid_points
from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.tasks import MixturePrior


@torch.no_grad()
def validation_energies(
    model: EnergyTransformer, lengths: Sequence[int], n_tasks: int, seed: int, n_test: int,
    resolution: int, prior: MixturePrior | None = None, box: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Energies on held-out validation tasks, computed once for any number of temperature trials.

    Returns grid energies (T, P, G), mean test-point energies (T, P) and log(cell area), so the
    NLL at inverse temperature s is  s * et + logsumexp(-s * eg) + log_area  per task and length.
    """
    prior, box = resolve_prior_and_box(model, prior, box)
    lengths = [int(n) for n in lengths]
    g = torch.Generator().manual_seed(int(seed))
    tasks = [prior.sample_task(g) for _ in range(n_tasks)]
    context = torch.stack([t.sample(max(lengths), g) for t in tasks]).to(model.dtype)
    test = torch.stack([t.sample(n_test, g) for t in tasks]).to(model.dtype)
    grid, area = grid_points(box, resolution)
    e_grid, e_test = [], []
    with eval_mode(model):
        for i in range(0, n_tasks, 4):
            ctx = context[i : i + 4]
            gq = grid.to(model.dtype)[None].expand(ctx.shape[0], -1, -1)
            e_grid.append(model.energy_at_prefixes(gq, ctx, lengths).cpu().double())
            e_test.append(model.energy_at_prefixes(test[i : i + 4], ctx, lengths).cpu().double().mean(-1))
    return torch.cat(e_grid).numpy(), torch.cat(e_test).numpy(), math.log(area)


def _nll_at(s: float, eg: np.ndarray, et: np.ndarray, log_area: float) -> np.ndarray:
    """Validation NLL per length (P,) at inverse temperature s (mean over tasks)."""
    return (s * et + logsumexp(-s * eg, axis=-1) + log_area).mean(0)


def _best_scale(nll: Callable[[float], float], bounds: tuple[float, float]) -> float:
    """Minimise a convex NLL over s in bounds, searching in log s."""
    res = minimize_scalar(lambda ls: nll(math.exp(ls)), method="bounded",
                          bounds=(math.log(bounds[0]), math.log(bounds[1])), options={"xatol": 1e-4})
    return float(math.exp(res.x))


def calibrate_temperature(
    model: EnergyTransformer, n_tasks: int = 32, seed: int = 777, ns: Sequence[int] = DEFAULT_NS,
    n_test: int = 200, resolution: int = 100, prior: MixturePrior | None = None,
    box: tuple[float, float] | None = None, bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """One scalar s (E -> s * E) minimising the validation NLL averaged over ns.

    Returns the absolute energy_scale to store in model.config.energy_scale: the fitted factor
    times the current one. Use a seed other than the evaluation seed (tasks must be held out).
    """
    eg, et, log_area = validation_energies(model, ns, n_tasks, seed, n_test, resolution, prior, box)
    factor = _best_scale(lambda s: float(_nll_at(s, eg, et, log_area).mean()), bounds)
    return factor * float(model.config.energy_scale)


def fit_length_scales(
    model: EnergyTransformer, n_knots: int = 8, n_tasks: int = 32, seed: int = 777,
    n_test: int = 200, resolution: int = 120, bounds: tuple[float, float] = (0.05, 20.0),
) -> tuple[list[float], dict]:
    """Fit one inverse temperature per knot length (0, 1, 2, 4, ...) on validation tasks.

    The model must be uncalibrated (length_scales None, energy_scale 1). Returns the scales
    and a report with the validation NLL at each knot before and after.
    """
    if model.config.length_scales is not None or model.config.energy_scale != 1.0:
        raise ValueError("fit_length_scales expects an uncalibrated model")
    knots = EnergyConfig.length_knots(n_knots)
    if knots[-1] > model.config.max_context:
        raise ValueError(f"knot {knots[-1]} exceeds the model's max_context {model.config.max_context}")
    eg, et, log_area = validation_energies(model, knots, n_tasks, seed, n_test, resolution)
    scales = [
        round(_best_scale(lambda s, p=p: float(_nll_at(s, eg, et, log_area)[p]), bounds), 4)
        for p in range(len(knots))
    ]
    before = _nll_at(1.0, eg, et, log_area)
    after = np.array([_nll_at(s, eg, et, log_area)[p] for p, s in enumerate(scales)])
    report = {"knots": knots, "scales": scales, "val_nll_before": before.round(4).tolist(),
              "val_nll_after": after.round(4).tolist(), "n_tasks": n_tasks, "seed": seed,
              "resolution": resolution}
    return scales, report


def choose_sampler(
    model: EnergyTransformer, candidates: Sequence[SamplerConfig], n_tasks: int = 8,
    n_particles: int = 1000, seed: int = 4243,
) -> tuple[SamplerConfig, list[dict]]:
    """The candidate that brings the most uniformly started particles near the data (validation seed)."""
    rows = []
    for s in candidates:
        frac = guidance_fraction(model, n_tasks=n_tasks, n_particles=n_particles, sampler=s, seed=seed)
        rows.append({**s.to_dict(), "fraction": round(frac, 4)})
    best = int(np.argmax([r["fraction"] for r in rows]))
    return candidates[best], rows


DEFAULT_SAMPLER_CANDIDATES = (
    SamplerConfig(steps=200, step_size=0.05, noise_std=0.316, grad_clip=20.0),  # training's Langevin
    SamplerConfig(steps=200, step_size=0.1, noise_std=0.2, grad_clip=20.0),
    SamplerConfig(steps=200, step_size=0.2, noise_std=0.1, grad_clip=10.0),
    SamplerConfig(steps=200, step_size=0.3, noise_std=0.05, grad_clip=5.0),
)
