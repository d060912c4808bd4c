"""Langevin dynamics on E(x | context):  x <- x - step_size * clip(grad_x E) + noise_std * eps.

With noise_std = sqrt(2 * step_size * T) the chains sample exp(-E / T) (up to the discretisation
bias of order step_size): T = 1 is p(x) itself, T < 1 a sharpened p^(1/T) that crowds the modes.
`noise_for_temperature` and `temperature_of` convert between the two ways of saying it.

The context is encoded once (its keys/values are constant while chains move), and
each step runs only the query tokens forward and backward. Gradients are taken with
respect to the particles alone, so sampling never touches parameter gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from iclebm.models.backbone import ContextCache
from iclebm.models.energy import EnergyTransformer


@dataclass
class SamplerConfig:
    """Default sampler settings; a checkpoint card stores these under "sampler"."""

    steps: int = 100
    step_size: float = 0.05
    noise_std: float = 0.316
    grad_clip: float | None = 20.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SamplerConfig:
        return cls(
            steps=int(d.get("steps", 100)),
            step_size=float(d.get("step_size", 0.05)),
            noise_std=float(d.get("noise_std", 0.316)),
            grad_clip=None if d.get("grad_clip", 20.0) is None else float(d.get("grad_clip", 20.0)),
        )


def noise_for_temperature(step_size: float, temperature: float = 1.0) -> float:
    """The noise std that makes x <- x - step * grad E + noise * eps sample exp(-E / T):
    sqrt(2 * step * T); T = 1 samples p(x) itself."""
    if not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive number, got {step_size}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return math.sqrt(2.0 * step_size * temperature)


def temperature_of(step_size: float, noise_std: float) -> float:
    """The temperature T a (step size, noise std) pair samples, exp(-E / T): noise^2 / (2 step).
    A card's sampler of step 0.1 and noise 0.2 is T = 0.2, i.e. the sharpened density p^5."""
    if not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive number, got {step_size}")
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be a non-negative number, got {noise_std}")
    return noise_std**2 / (2.0 * step_size)


def clip_norm(g: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale each 2-vector (last dim) down to at most max_norm; None leaves g as is."""
    if max_norm is None:
        return g
    norm = g.norm(dim=-1, keepdim=True)
    return g * (max_norm / norm.clamp_min(max_norm))


def draw_noise(x: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like x (B, ...), on x's device.

    A generator draws on its own device (a CPU generator on the CPU, then moved), so a seed gives
    the same chains on every device; a list of B generators draws row b from generator b, so a
    task's chains do not depend on which other tasks share its batch (data-parallel ranks).
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != x.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
        rows = [torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=g.device) for g in generator]
        return torch.stack(rows).to(x.device)
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)


MAX_SAMPLER_STEPS = 100_000  # Langevin steps per call; more is a typo, not a run (the UI offers <= 2000)
MAX_PARTICLES = 1_000_000  # chains per call (all batches and prefix groups together)


def _check_particles(init: torch.Tensor) -> None:
    if init.numel() // 2 > MAX_PARTICLES:
        raise ValueError(f"{init.numel() // 2} particles in one call; at most {MAX_PARTICLES}")


def _check_sampler_args(steps: int, step_size: float, noise_std: float, grad_clip: float | None) -> None:
    if not 0 <= int(steps) <= MAX_SAMPLER_STEPS:
        raise ValueError(f"steps must be in [0, {MAX_SAMPLER_STEPS}], got {steps}")
    if not 0 <= step_size < float("inf") or not 0 <= noise_std < float("inf"):
        raise ValueError("step_size and noise_std must be finite non-negative numbers")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError("grad_clip must be positive or None")


def langevin_cached(
    model: EnergyTransformer,
    cache: ContextCache,
    init: torch.Tensor,
    steps: int,
    step_size: float,
    noise_std: float,
    grad_clip: float | None = None,
    lengths: torch.Tensor | None = None,
    box: tuple[float, float] | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    return_trajectory: bool = False,
) -> torch.Tensor:
    """Chains for every prefix group at once. init: (B, P, C, 2) -> (B, P, C, 2).

    Group p samples E(. | context[:, :lengths[p]]); `box` clamps particles after each step.
    With return_trajectory the result is (T+1, B, P, C, 2), starting with init.
    """
    _check_sampler_args(steps, step_size, noise_std, grad_clip)
    _check_particles(init)
    cache = cache.detach()
    x = init.detach().to(device=model.device, dtype=model.dtype)
    return langevin_energy(lambda q: model.energy_cached(q, cache, lengths), x, steps, step_size, noise_std,
                           grad_clip, box=box, generator=generator, return_trajectory=return_trajectory)


def langevin_energy(
    energy: Callable[[torch.Tensor], torch.Tensor],
    init: torch.Tensor,
    steps: int,
    step_size: float,
    noise_std: float,
    grad_clip: float | None = None,
    box: tuple[float, float] | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    return_trajectory: bool = False,
) -> torch.Tensor:
    """Langevin chains on any differentiable energy: `energy(x)` maps particles (..., 2) to
    energies whose sum is differentiated. The model samplers above call it; so do tests on a known
    energy. With return_trajectory the result is (T+1, *init.shape), starting with init."""
    _check_sampler_args(steps, step_size, noise_std, grad_clip)
    x = init.detach().clone()
    traj = [x] if return_trajectory else None
    with torch.enable_grad():
        for _ in range(int(steps)):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)
            with torch.no_grad():
                noise = draw_noise(x, generator)
                x = x - step_size * clip_norm(grad, grad_clip) + noise_std * noise
                if box is not None:
                    x = x.clamp(box[0], box[1])
            if traj is not None:
                traj.append(x)
    # The first frame is the tensor that requires_grad_ marked in place: detach the stack.
    return torch.stack(traj).detach() if traj is not None else x.detach()


def langevin(
    model: EnergyTransformer,
    context: torch.Tensor,
    init: torch.Tensor,
    steps: int,
    step_size: float,
    noise_std: float,
    grad_clip: float | None = None,
    return_trajectory: bool = False,
    box: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample E(x | context) with Langevin dynamics, batched over chains.

    context: (B, N, 2) or (N, 2); init: (B, M, 2) or (M, 2) particle starts.
    Returns the final particles (shape of init), or with return_trajectory every
    step, (T+1, *init.shape), for animation.
    """
    context = torch.as_tensor(context)
    init = torch.as_tensor(init)
    unbatched = init.ndim == 2
    if context.ndim == 2:
        context = context[None]
    if unbatched:
        init = init[None]
    if init.ndim != 3 or init.shape[-1] != 2:
        raise ValueError(f"init must have shape (M, 2) or (B, M, 2), got {tuple(init.shape)}")
    if init.shape[1] == 0:
        raise ValueError("init is empty: pass at least one particle")
    if not bool(torch.isfinite(init).all()):
        raise ValueError("init contains NaN or inf")
    if context.shape[0] == 1 and init.shape[0] > 1:
        context = context.expand(init.shape[0], -1, -1)
    if context.shape[0] != init.shape[0]:
        raise ValueError(f"context batch ({context.shape[0]}) and init batch ({init.shape[0]}) differ")
    with torch.no_grad():
        cache = model.encode_context(context.to(model.dtype))
    out = langevin_cached(
        model, cache, init[:, None], steps, step_size, noise_std, grad_clip,
        box=box, generator=generator, return_trajectory=return_trajectory,
    )
    out = out[..., 0, :, :]  # drop the prefix-group axis
    return out[:, 0] if unbatched and return_trajectory else out[0] if unbatched else out


def uniform_init(n: int, box: tuple[float, float], generator: torch.Generator | None = None,
                 batch: int | None = None) -> torch.Tensor:
    """n particles uniform over the square box; (n, 2) or (batch, n, 2)."""
    shape = (n, 2) if batch is None else (batch, n, 2)
    lo, hi = box
    return lo + (hi - lo) * torch.rand(shape, generator=generator)


def langevin_y(
    model: EnergyTransformer, cache: ContextCache, x: torch.Tensor, y: torch.Tensor, steps: int,
    step_size: float, noise_std: float, grad_clip: float | None, lengths: torch.Tensor | None,
    y_box: tuple[float, float], generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Langevin on y with x held fixed: x, y (B, P, C) -> y (B, P, C).

    y <- y - step_size * clip(dE/dy) + noise_std * eps, clamped to y_box; group p sees the
    context prefix lengths[p]."""
    _check_sampler_args(steps, step_size, noise_std, grad_clip)
    _check_particles(y[..., None].expand(*y.shape, 2))
    cache = cache.detach()
    x = x.detach().to(model.dtype)
    y = y.detach().to(model.dtype).clone()
    with torch.enable_grad():
        for _ in range(int(steps)):
            y.requires_grad_(True)
            e = model.energy_cached(torch.stack([x, y], -1), cache, lengths)
            (g,) = torch.autograd.grad(e.sum(), y)
            with torch.no_grad():
                if grad_clip is not None:
                    g = g.clamp(-grad_clip, grad_clip)
                noise = draw_noise(y, generator)  # a CPU generator draws on the CPU, then moves
                y = (y - step_size * g + noise_std * noise).clamp(*y_box)
    return y.detach()
