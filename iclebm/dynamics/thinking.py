"""Prediction by energy minimisation ("thinking"), as in Energy-Based Transformers.

A prediction at x is y* = argmin_y E(y | x, D), found by gradient descent on y from a start:

    y <- y - step_size * clip(dE/dy)

More steps = thinking longer. With several starts, each candidate is minimised and the one
of lowest final energy is kept (the energy verifies its own candidates). The context is
encoded once; every step runs only the M * S query tokens (S starts) forward and backward.

accept="descent" makes thinking never hurt the energy: a step is kept only where it lowers that
candidate's energy, and where it does not the candidate stays and its step size halves (a
backtracking line search per candidate), so the energy after k steps is non-increasing in k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from iclebm.card import box_of
from iclebm.models.energy import EnergyTransformer

STARTS = ("zero", "context_mean")
ACCEPTS = ("always", "descent")  # take every gradient step, or only those that lower the energy


@dataclass
class ThinkingConfig:
    """Default thinking settings; a regression checkpoint's card stores these under "thinking"."""

    start: str = "zero"  # first candidate: "zero" (the prior mean of y) or "context_mean"
    steps: int = 20
    step_size: float = 0.1
    grad_clip: float | None = 10.0  # clip on |dE/dy| per step
    starts: int = 1  # candidates per x: the start above, plus starts - 1 spread evenly over the y-range
    accept: str = "always"  # "descent": keep a step only if it lowers the energy (see the module doc)

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        if self.accept not in ACCEPTS:
            raise ValueError(f"accept must be one of {ACCEPTS}, got {self.accept!r}")
        if not 1 <= int(self.starts) <= MAX_STARTS:
            raise ValueError(f"starts must be in [1, {MAX_STARTS}], got {self.starts}")
        _check(self.steps, self.step_size, self.grad_clip)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> ThinkingConfig:
        d = d or {}
        clip = d.get("grad_clip", 10.0)
        return cls(start=str(d.get("start", "zero")), steps=int(d.get("steps", 20)),
                   step_size=float(d.get("step_size", 0.1)), grad_clip=None if clip is None else float(clip),
                   starts=int(d.get("starts", 1)), accept=str(d.get("accept", "always")))


MAX_THINKING_STEPS = 10_000  # gradient steps per prediction (the app offers <= 200)
MAX_STARTS = 256  # candidates per x


def _check(steps: int, step_size: float, grad_clip: float | None) -> None:
    if not 0 <= int(steps) <= MAX_THINKING_STEPS:
        raise ValueError(f"steps must be in [0, {MAX_THINKING_STEPS}], got {steps}")
    if not (step_size >= 0 and step_size < float("inf")):
        raise ValueError(f"step_size must be a non-negative number, got {step_size}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError("grad_clip must be positive or None")


def minimise(
    energy_fn: Callable[[torch.Tensor], torch.Tensor], y0: torch.Tensor, steps: int, step_size: float,
    grad_clip: float | None = None, return_trajectory: bool = False, accept: str = "always",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient descent on a batch of independent scalar energies.

    energy_fn maps y (any shape) to energies of the same shape, each entry depending only on
    its own y. Returns (y, energies) after `steps` steps, or with return_trajectory both with
    a leading (steps + 1) axis starting at y0. accept="descent": only energy-lowering steps are
    kept (`_minimise_descent`)."""
    _check(steps, step_size, grad_clip)
    if accept not in ACCEPTS:
        raise ValueError(f"accept must be one of {ACCEPTS}, got {accept!r}")
    if accept == "descent":
        return _minimise_descent(energy_fn, y0, int(steps), step_size, grad_clip, return_trajectory)
    y = y0.detach().clone()
    ys, es = [], []
    with torch.enable_grad():
        for i in range(int(steps) + 1):
            y.requires_grad_(True)
            e = energy_fn(y)
            if return_trajectory or i == int(steps):
                ys.append(y.detach())
                es.append(e.detach())
            if i == int(steps):
                break
            (g,) = torch.autograd.grad(e.sum(), y)
            with torch.no_grad():
                if grad_clip is not None:
                    g = g.clamp(-grad_clip, grad_clip)
                y = y - step_size * g
    if return_trajectory:
        return torch.stack(ys), torch.stack(es)
    return ys[-1], es[-1]


def _value_and_grad(
    energy_fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        e = energy_fn(y)
        (g,) = torch.autograd.grad(e.sum(), y)
    return e.detach(), g.detach()


def _minimise_descent(
    energy_fn: Callable[[torch.Tensor], torch.Tensor], y0: torch.Tensor, steps: int, step_size: float,
    grad_clip: float | None, return_trajectory: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """minimise with energy-decrease acceptance: each entry proposes y - lr * clip(g) and keeps it
    only if its energy is lower (a NaN energy never is); a rejected entry halves its own lr.
    One forward and backward per step, at the proposal (the gradient there is reused when kept)."""
    y = y0.detach().clone()
    e, g = _value_and_grad(energy_fn, y)
    lr = torch.full_like(y, float(step_size))
    ys, es = [y], [e]
    for _ in range(steps):
        d = g if grad_clip is None else g.clamp(-grad_clip, grad_clip)
        prop = y - lr * d
        e_new, g_new = _value_and_grad(energy_fn, prop)
        ok = e_new < e
        y, e, g = torch.where(ok, prop, y), torch.where(ok, e_new, e), torch.where(ok, g_new, g)
        lr = torch.where(ok, lr, 0.5 * lr)
        if return_trajectory:
            ys.append(y)
            es.append(e)
    if return_trajectory:
        return torch.stack(ys), torch.stack(es)
    return y, e


def start_values(
    start: str, context: torch.Tensor, m: int, starts: int, y_box: tuple[float, float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Starting candidates (B, M, S): the named start first, then S - 1 values spread evenly over
    y_box (cell midpoints), or uniform draws from it when a generator is given."""
    b, n = context.shape[0], context.shape[1]
    if start == "zero" or n == 0:
        first = torch.zeros(b, m, 1, dtype=context.dtype, device=context.device)
    elif start == "context_mean":
        first = context[:, :, 1].mean(1)[:, None, None].expand(b, m, 1)
    else:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if starts == 1:
        return first.clone()
    lo, hi = y_box
    if generator is None:
        k = torch.arange(starts - 1, dtype=torch.float64, device=context.device)
        grid = lo + (hi - lo) * (k + 0.5) / (starts - 1)
        rest = grid.expand(b, m, starts - 1)
    else:
        rest = lo + (hi - lo) * torch.rand(b, m, starts - 1, generator=generator, dtype=torch.float64)
    return torch.cat([first, rest.to(device=context.device, dtype=context.dtype)], -1)  # draws: on the CPU


def predict(
    model: EnergyTransformer,
    x: torch.Tensor,
    context: torch.Tensor,
    steps: int | None = None,
    step_size: float | None = None,
    starts: int | None = None,
    return_trajectory: bool = False,
    start: str | None = None,
    grad_clip: float | None | str = "card",
    generator: torch.Generator | None = None,
    accept: str | None = None,
) -> torch.Tensor:
    """Predict y at x (B, M) from context (B, N, 2) by minimising E(y | x, D) over y.

    Unset settings (None) come from the model card's "thinking" entry (else ThinkingConfig()).
    starts > 1: the first candidate is the default start, the others spread evenly over the
    box's y-range (uniform draws with a generator); the candidate of lowest final energy is kept.
    accept: "always" or "descent" (only energy-lowering steps; see the module doc).
    Returns y_hat (B, M), or with return_trajectory the prediction after every step k (the
    lowest-energy candidate at step k, equal to predict with steps=k), (steps + 1, B, M)."""

    cfg = ThinkingConfig.from_dict((model.card or {}).get("thinking"))
    steps = cfg.steps if steps is None else int(steps)
    step_size = cfg.step_size if step_size is None else float(step_size)
    start = cfg.start if start is None else start
    starts = cfg.starts if starts is None else starts
    clip = cfg.grad_clip if grad_clip == "card" else grad_clip
    accept = cfg.accept if accept is None else accept
    if not 1 <= int(starts) <= MAX_STARTS:
        raise ValueError(f"starts must be in [1, {MAX_STARTS}], got {starts}")
    _check(steps, step_size, clip)  # type: ignore[arg-type]
    context = torch.as_tensor(context, dtype=model.dtype).to(model.device)  # x and the starts follow it
    if context.ndim == 2:
        context = context[None]
    x = torch.as_tensor(x, dtype=model.dtype).to(model.device)
    if x.ndim == 1:
        x = x[None].expand(context.shape[0], -1)
    if x.ndim != 2 or x.shape[0] != context.shape[0]:
        raise ValueError(f"x must have shape (B, M) matching the context batch, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    with torch.no_grad():
        cache = model.encode_context(context).detach()
    b, m = x.shape
    y0 = start_values(start, context, m, int(starts), box_of(model), generator)  # (B, M, S)
    xs = x[:, :, None].expand_as(y0)

    def energy_fn(y: torch.Tensor) -> torch.Tensor:  # (B, M, S) -> (B, M, S)
        q = torch.stack([xs, y], -1).reshape(b, 1, m * y0.shape[-1], 2)
        return model.energy_cached(q, cache)[:, 0].reshape(y.shape)

    ys, es = minimise(energy_fn, y0, steps, step_size, clip, return_trajectory, accept)  # type: ignore[arg-type]
    # The prediction after k steps is the candidate of lowest energy at step k, so the trajectory
    # at k equals predict(..., steps=k).
    best = es.argmin(-1, keepdim=True)  # (..., B, M, 1)
    return ys.gather(-1, best)[..., 0]
