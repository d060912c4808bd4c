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
from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from .checkpoints import box_of
from .evaluate import grid_points, guidance_fraction
from .model import EnergyConfig, EnergyTransformer
from .sampling import SamplerConfig
from .tasks import MixturePrior


@torch.no_grad()
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
    prior = MixturePrior.from_card(model.card["task"])
    box = box_of(model)
    g = torch.Generator().manual_seed(seed)
    tasks = [prior.sample_task(g) for _ in range(n_tasks)]
    context = torch.stack([t.sample(knots[-1], g) for t in tasks])
    test = torch.stack([t.sample(n_test, g) for t in tasks])
    grid, area = grid_points(box, resolution)
    e_grid, e_test = [], []
    for i in range(0, n_tasks, 4):
        ctx = context[i : i + 4]
        gq = grid.float()[None].expand(ctx.shape[0], -1, -1)
        e_grid.append(model.energy_at_prefixes(gq, ctx, knots).double())  # (t, P, G)
        e_test.append(model.energy_at_prefixes(test[i : i + 4], ctx, knots).double().mean(-1))  # (t, P)
    eg = torch.cat(e_grid).numpy()
    et = torch.cat(e_test).numpy()
    log_area = math.log(area)

    def nll(s: float, p: int) -> float:
        return float((s * et[:, p] + logsumexp(-s * eg[:, p], axis=-1) + log_area).mean())

    scales, before, after = [], [], []
    for p in range(len(knots)):
        res = minimize_scalar(lambda ls, p=p: nll(math.exp(ls), p), method="bounded",
                              bounds=(math.log(bounds[0]), math.log(bounds[1])), options={"xatol": 1e-4})
        scales.append(round(float(math.exp(res.x)), 4))
        before.append(round(nll(1.0, p), 4))
        after.append(round(nll(scales[-1], p), 4))
    report = {"knots": knots, "scales": scales, "val_nll_before": before, "val_nll_after": after,
              "n_tasks": n_tasks, "seed": seed, "resolution": resolution}
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
