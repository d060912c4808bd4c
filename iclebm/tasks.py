"""Task families: distributions over the 2-D plane that a context is drawn from.

A *task* is one distribution p; a *task prior* draws tasks. Pretraining uses the
Gaussian-mixture prior (paper: mixtures of 3 isotropic Gaussians with uniform
weights). The non-Gaussian shapes exist for probing how the frozen model reacts to
data it never saw in training; they expose `sample` only (no exact density).

Regression families (`linear`, `sinusoid`) are tasks over (x, y) pairs: x ~ U(x_lo, x_hi)
and y = f(x) + N(0, noise_std^2); each task has the exact conditional `log_prob_y(y, x)`.
`FAMILIES` is the family registry: every family's name (as a card writes it), kind (density
or regression) and prior class. A prior says what it supports through `capabilities`; pages and
tools ask it instead of assuming. `iclebm.card.prior_from_card` rebuilds a prior from a card.

Everything takes an explicit `torch.Generator`, so a seed reproduces a task and
its points exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Protocol, TypeVar

import torch

from iclebm.errors import TaskFamilyError, TaskPoolError

Range = float | tuple[float, float]
DENSITY, REGRESSION = "density", "regression"  # the two kinds of task: points x, or pairs (x, y)


@dataclass(frozen=True)
class Capabilities:
    """What a task prior supports. A page shows what it can and says in one line what is not
    available and why (`why_no_bayes`), instead of raising."""

    kind: str  # DENSITY (x in the plane, E(x | D)) or REGRESSION ((x, y) pairs, E(y | x, D))
    bayes: bool  # the Bayes posterior predictive under this prior is available in iclebm.evaluation
    anisotropic: bool = False  # components are rotated ellipses, not circles
    why_no_bayes: str | None = None


def _draw(value: Range, generator: torch.Generator) -> float:
    """A fixed number, or a uniform draw from [lo, hi]."""
    if isinstance(value, (int, float)):
        return float(value)
    lo, hi = value
    return lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64).item()


MAX_COMPONENTS = 64
MAX_REJECTIONS = 100_000  # draws per mean before sample_task gives up (construction makes this unreachable)


def _check_range(name: str, value: object, lower: float, strict: bool) -> None:
    """A number or a [lo, hi] range of finite numbers with lo <= hi, each > lower (>= when not strict)."""
    values = value if isinstance(value, tuple | list) else (value,)
    ok = 1 <= len(values) <= 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        and (v > lower if strict else v >= lower) for v in values)
    if not ok or (len(values) == 2 and values[0] > values[1]):
        bound = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number or [lo, hi] range with lo <= hi, "
                         f"each {bound} {lower:g}; got {value!r}")


def _as_range(value: Range | list[float]) -> Range:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] > value[1]:
            raise ValueError(f"a range must be [lo, hi] with lo <= hi, got {value!r}")
        return (float(value[0]), float(value[1]))
    return float(value)


class Task(Protocol):
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of Gaussians with uniform weights; exact log density and sampling.

    `GaussianMixture(means, stds)` is the isotropic mixture (component k has covariance
    stds[k]^2 I). Passing `covs` (K, 2, 2) gives full covariances instead; `stds` is then
    the geometric-mean std det(cov)^(1/4) of each component (filled in when omitted).
    """

    means: torch.Tensor  # (K, 2)
    stds: torch.Tensor | None = None  # (K,)
    covs: torch.Tensor | None = None  # (K, 2, 2) or None for isotropic components

    def __post_init__(self) -> None:
        if self.means.ndim != 2 or self.means.shape[1] != 2:
            raise ValueError(f"means must have shape (K, 2), got {tuple(self.means.shape)}")
        k = self.means.shape[0]
        if self.covs is not None:
            covs = torch.as_tensor(self.covs, dtype=torch.float64)
            if covs.shape != (k, 2, 2):
                raise ValueError(f"covs must have shape (K, 2, 2) = ({k}, 2, 2), got {tuple(covs.shape)}")
            if not torch.allclose(covs, covs.transpose(-1, -2), rtol=1e-9, atol=1e-12):
                raise ValueError("covs must be symmetric")
            if not bool((torch.linalg.eigvalsh(covs) > 0).all()):
                raise ValueError("covs must be positive definite")
            object.__setattr__(self, "covs", covs)
            if self.stds is None:
                object.__setattr__(self, "stds", torch.linalg.det(covs) ** 0.25)
        if self.stds is None:
            raise ValueError("give the component stds (isotropic) or covs (full covariances)")
        if self.stds.shape != (k,):
            raise ValueError("stds must have one entry per component")
        if not bool((self.stds > 0).all()):
            raise ValueError("component stds must be positive")

    @classmethod
    def anisotropic(
        cls, means: torch.Tensor, major_std: torch.Tensor, minor_std: torch.Tensor, angle: torch.Tensor
    ) -> GaussianMixture:
        """Components with std major_std along direction `angle` (radians) and minor_std across it."""
        c, s = torch.cos(angle.double()), torch.sin(angle.double())
        rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (K, 2, 2)
        var = torch.stack([major_std.double() ** 2, minor_std.double() ** 2], -1)  # (K, 2)
        covs = rot @ torch.diag_embed(var) @ rot.transpose(-1, -2)
        return cls(means.double(), covs=0.5 * (covs + covs.transpose(-1, -2)))

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def isotropic(self) -> bool:
        return self.covs is None

    def covariances(self) -> torch.Tensor:
        """(K, 2, 2) float64 covariances, isotropic or not."""
        if self.covs is not None:
            return self.covs
        return self.stds.double()[:, None, None] ** 2 * torch.eye(2, dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 2) i.i.d. points, float32."""
        k = torch.randint(self.n_components, (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        if self.covs is None:
            x = self.means.double()[k] + self.stds.double()[k, None] * noise
        else:
            chol = torch.linalg.cholesky(self.covs)  # (K, 2, 2) lower triangular
            x = self.means.double()[k] + (chol[k] @ noise[:, :, None])[..., 0]
        return x.float()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 2) -> (...) exact log density (float64 inside)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        mu = self.means.double()
        diff = x[..., None, :] - mu  # (..., K, 2)
        if self.covs is None:
            var = self.stds.double() ** 2  # (K,)
            log_comp = -0.5 * (diff**2).sum(-1) / var - torch.log(2 * math.pi * var)
        else:
            prec = torch.linalg.inv(self.covs)  # (K, 2, 2)
            maha = torch.einsum("...ki,kij,...kj->...k", diff, prec, diff)
            log_comp = -0.5 * maha - math.log(2 * math.pi) - 0.5 * torch.logdet(self.covs)
        return torch.logsumexp(log_comp, dim=-1) - math.log(self.n_components)


T = TypeVar("T", "GaussianMixture", "RegressionTask")


def _task_batch(sample_task: Callable[[torch.Generator], T], n_tasks: int, n_points: int,
                generator: torch.Generator | None) -> tuple[torch.Tensor, list[T]]:
    """Every prior's `sample_batch`: n_tasks fresh tasks from one generator (seed 0 when none is
    given), then n_points from each, task by task, so a batch is reproducible from its generator."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    tasks = [sample_task(g) for _ in range(n_tasks)]
    return torch.stack([t.sample(n_points, g) for t in tasks]), tasks  # type: ignore[attr-defined]


@dataclass(frozen=True)
class MixturePrior:
    """Prior over Gaussian-mixture tasks.

    Means ~ N(0, mean_std^2 I), redrawn while any coordinate exceeds `mean_limit`
    (so every task fits comfortably inside the plotting box); each component's std
    and the number of components are fixed numbers or uniform draws from a range.

    Anisotropy: with `aspect_ratio` > 1 (a number or a [lo, hi] range, each >= 1) every
    component draws a ratio r of its major to minor std and a uniform rotation angle in
    [0, pi); its axis stds are s * sqrt(r) and s / sqrt(r), so `component_std` s stays the
    geometric-mean std (the same area as the isotropic component). aspect_ratio = 1 draws
    nothing extra: isotropic priors give exactly the tasks they always gave.
    """

    n_components: int | tuple[int, int] = 3
    mean_std: Range = 3.0
    component_std: Range = (0.33, 0.5)
    mean_limit: float = 8.0
    aspect_ratio: Range = 1.0

    def __post_init__(self) -> None:
        k = self.n_components
        ks = k if isinstance(k, tuple) else (k, k)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ks):
            raise ValueError(f"n_components must be a whole number or a [lo, hi] range, got {k!r}")
        if isinstance(k, tuple) and not 1 <= k[0] <= k[1]:
            raise ValueError(f"n_components must be a range [lo, hi] with 1 <= lo <= hi, got {list(k)}")
        if not 1 <= ks[0] <= ks[1] <= MAX_COMPONENTS:
            raise ValueError(f"n_components must be in [1, {MAX_COMPONENTS}], got {k}")
        _check_range("mean_std", self.mean_std, 0.0, strict=False)
        _check_range("component_std", self.component_std, 0.0, strict=True)
        lo = self.aspect_ratio[0] if isinstance(self.aspect_ratio, tuple) else self.aspect_ratio
        if not lo >= 1.0:  # also refuses NaN
            raise ValueError(f"aspect_ratio must be >= 1 (major / minor std), got {self.aspect_ratio!r}")
        _check_range("aspect_ratio", self.aspect_ratio, 1.0, strict=False)
        limit = self.mean_limit
        if not (isinstance(limit, int | float) and not isinstance(limit, bool) and 0 < limit):
            raise ValueError(f"mean_limit must be a positive number (inf: no truncation), got {limit!r}")
        # The means are drawn by rejection (see sample_task): refuse a limit so tight that it would
        # take more than ~1000 draws per mean, instead of looping (nearly) forever.
        widest = self.mean_std[1] if isinstance(self.mean_std, tuple) else self.mean_std
        if widest > 0 and math.erf(limit / (widest * math.sqrt(2))) ** 2 < 1e-3:
            raise ValueError(f"mean_limit {limit:g} is too small for mean_std {widest:g}: fewer than "
                             "1 in 1000 drawn means would fit")

    @property
    def anisotropic(self) -> bool:
        r = self.aspect_ratio
        return (r[1] if isinstance(r, tuple) else r) > 1.0

    @property
    def capabilities(self) -> Capabilities:
        ranged_a = isinstance(self.mean_std, tuple) and self.mean_std[0] != self.mean_std[1]
        why = None
        if self.anisotropic and ranged_a:  # the anisotropic path has no evidence over a range of mean_std
            why = ("the Bayes predictive for elongated, rotated components takes a fixed mean_std, "
                   "and this prior draws it from a range")
        return Capabilities(DENSITY, why is None, anisotropic=self.anisotropic, why_no_bayes=why)

    @classmethod
    def from_card(cls, task: dict) -> MixturePrior:
        """Build from a checkpoint card's `"task"` entry (numbers or [lo, hi] lists)."""
        k = task.get("n_components", 3)
        k = tuple(int(v) for v in k) if isinstance(k, (list, tuple)) else int(k)
        return cls(
            n_components=k,
            mean_std=_as_range(task.get("mean_std", 3.0)),
            component_std=_as_range(task.get("component_std", (0.33, 0.5))),
            mean_limit=float(task.get("mean_limit", 8.0)),
            aspect_ratio=_as_range(task.get("aspect_ratio", 1.0)),
        )

    def to_card(self) -> dict:
        def plain(v: object) -> object:
            return list(v) if isinstance(v, tuple) else v

        card = {
            "family": "gaussian_mixture",
            "n_components": plain(self.n_components),
            "mean_std": plain(self.mean_std),
            "component_std": plain(self.component_std),
            "mean_limit": self.mean_limit,
        }
        if self.anisotropic:  # isotropic cards keep their old form
            card["aspect_ratio"] = plain(self.aspect_ratio)
            card["rotation"] = "uniform"
        return card

    def sample_task(self, generator: torch.Generator | None = None) -> GaussianMixture:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if isinstance(self.n_components, tuple):
            lo, hi = self.n_components
            k = int(torch.randint(lo, hi + 1, (), generator=g))
        else:
            k = int(self.n_components)
        mean_std = _draw(self.mean_std, g)
        means = torch.empty(k, 2, dtype=torch.float64)
        for i in range(k):
            for _ in range(MAX_REJECTIONS):  # rejection keeps means inside the limit; rarely loops
                m = mean_std * torch.randn(2, generator=g, dtype=torch.float64)
                if bool((m.abs() <= self.mean_limit).all()):
                    break
            else:
                raise ValueError(f"no mean within mean_limit {self.mean_limit:g} in {MAX_REJECTIONS} draws")
            means[i] = m
        stds = torch.tensor([_draw(self.component_std, g) for _ in range(k)], dtype=torch.float64)
        if not self.anisotropic:
            return GaussianMixture(means, stds)
        ratio = torch.tensor([_draw(self.aspect_ratio, g) for _ in range(k)], dtype=torch.float64)
        angle = math.pi * torch.rand(k, generator=g, dtype=torch.float64)
        return GaussianMixture.anisotropic(means, stds * ratio.sqrt(), stds / ratio.sqrt(), angle)

    def sample_batch(
        self, n_tasks: int, n_points: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, list[GaussianMixture]]:
        """(n_tasks, n_points, 2) contexts, one fresh task per row, and the tasks."""
        return _task_batch(self.sample_task, n_tasks, n_points, generator)


# ---- Non-Gaussian probe shapes (sample only) -----------------------------------------


@dataclass(frozen=True)
class TwoMoons:
    scale: float = 2.5
    noise: float = 0.15
    center: tuple[float, float] = (0.0, 0.0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        t = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        upper = torch.rand(n, generator=generator) < 0.5
        x = torch.where(upper, torch.cos(t), 1.0 - torch.cos(t))
        y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
        pts = torch.stack([x - 0.5, y - 0.25], -1) * self.scale
        pts = pts + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (pts + torch.tensor(self.center, dtype=torch.float64)).float()


@dataclass(frozen=True)
class ConcentricRings:
    radii: tuple[float, ...] = (2.0, 5.0)
    noise: float = 0.2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r = torch.tensor(self.radii, dtype=torch.float64)
        which = torch.randint(len(self.radii), (n,), generator=generator)
        theta = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        rad = r[which] + self.noise * torch.randn(n, generator=generator, dtype=torch.float64)
        return torch.stack([rad * torch.cos(theta), rad * torch.sin(theta)], -1).float()


@dataclass(frozen=True)
class SwissRoll:
    scale: float = 0.6
    noise: float = 0.2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
        pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) * self.scale
        pts = pts + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return pts.float()


@dataclass(frozen=True)
class UniformSquare:
    half_width: float = 4.0

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return ((2 * u - 1) * self.half_width).float()


PROBE_FAMILIES: dict[str, Task] = {
    "two moons": TwoMoons(),
    "concentric rings": ConcentricRings(),
    "swiss roll": SwissRoll(),
    "uniform square": UniformSquare(),
}


# ---- Regression families: tokens are (x, y) pairs ------------------------------------


def _check_x_range(x_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(x_range[0]), float(x_range[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"x_range must be [lo, hi] with lo < hi, got {x_range!r}")
    return lo, hi


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


@dataclass(frozen=True)
class RegressionTask:
    """y = mean(x) + N(0, noise_std^2), x ~ U(x_range). Subclasses define `mean`."""

    noise_std: float
    x_range: tuple[float, float]

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample_x(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        lo, hi = self.x_range
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 2) i.i.d. (x, y) pairs, float32."""
        x = self.sample_x(n, generator)
        y = self.mean(x) + self.noise_std * torch.randn(n, generator=generator, dtype=torch.float64)
        return torch.stack([x, y], -1).float()

    def log_prob_y(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(y | x) (float64), broadcasting y against x."""
        y = torch.as_tensor(y, dtype=torch.float64)
        mu = self.mean(torch.as_tensor(x, dtype=torch.float64))
        var = self.noise_std**2
        return -0.5 * (y - mu) ** 2 / var - 0.5 * math.log(2 * math.pi * var)


@dataclass(frozen=True)
class LinearTask(RegressionTask):
    w: float = 0.0
    b: float = 0.0

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * torch.as_tensor(x, dtype=torch.float64) + self.b


@dataclass(frozen=True)
class SinusoidTask(RegressionTask):
    amplitude: float = 1.0
    frequency: float = 1.0
    phase: float = 0.0

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        return self.amplitude * torch.sin(self.frequency * x + self.phase)


class _RegressionPrior:
    """Shared sampling for the regression priors (frozen dataclasses with `sample_task`)."""

    family = ""
    # Linear: exact (conjugate); sinusoid: self-normalised importance sampling over the parameters.
    capabilities = Capabilities(REGRESSION, bayes=True)

    def sample_task(self, generator: torch.Generator | None = None) -> RegressionTask:
        raise NotImplementedError

    def sample_batch(
        self, n_tasks: int, n_points: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, list[RegressionTask]]:
        """(n_tasks, n_points, 2) (x, y) contexts, one fresh task per row, and the tasks."""
        return _task_batch(self.sample_task, n_tasks, n_points, generator)


@dataclass(frozen=True)
class LinearPrior(_RegressionPrior):
    """y = w x + b + eps, w ~ N(0, w_std^2), b ~ N(0, b_std^2), eps ~ N(0, noise_std^2)."""

    x_range: tuple[float, float] = (-6.0, 6.0)
    w_std: float = 0.5
    b_std: float = 1.0
    noise_std: float = 0.5
    family = "linear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "x_range", _check_x_range(self.x_range))
        for name in ("w_std", "b_std", "noise_std"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))

    @classmethod
    def from_card(cls, task: dict) -> LinearPrior:
        d = cls()
        return cls(
            x_range=tuple(task.get("x_range", d.x_range)),  # type: ignore[arg-type]
            w_std=task.get("w_std", d.w_std), b_std=task.get("b_std", d.b_std),
            noise_std=task.get("noise_std", d.noise_std),
        )

    def to_card(self) -> dict:
        return {"family": "linear", "x_range": list(self.x_range), "w_std": self.w_std,
                "b_std": self.b_std, "noise_std": self.noise_std}

    def sample_task(self, generator: torch.Generator | None = None) -> LinearTask:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        w, b = (torch.randn(2, generator=g, dtype=torch.float64) * torch.tensor([self.w_std, self.b_std],
                dtype=torch.float64)).tolist()
        return LinearTask(noise_std=self.noise_std, x_range=self.x_range, w=w, b=b)


@dataclass(frozen=True)
class SinusoidPrior(_RegressionPrior):
    """y = A sin(omega x + phi) + eps with A, omega, phi uniform over their ranges."""

    x_range: tuple[float, float] = (-5.0, 5.0)
    amplitude: tuple[float, float] = (0.5, 3.0)
    frequency: tuple[float, float] = (0.5, 1.5)
    phase: tuple[float, float] = (0.0, 2 * math.pi)
    noise_std: float = 0.3
    family = "sinusoid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "x_range", _check_x_range(self.x_range))
        for name in ("amplitude", "frequency", "phase"):
            r = _as_range(list(getattr(self, name)))
            if not all(math.isfinite(v) for v in r):  # type: ignore[union-attr]
                raise ValueError(f"{name} must be a finite [lo, hi] range")
            object.__setattr__(self, name, r)
        if self.amplitude[0] < 0 or self.frequency[0] < 0:
            raise ValueError("amplitude and frequency ranges must be non-negative")
        object.__setattr__(self, "noise_std", _positive("noise_std", self.noise_std))

    @classmethod
    def from_card(cls, task: dict) -> SinusoidPrior:
        d = cls()
        return cls(**{k: (tuple(task[k]) if isinstance(task.get(k), list) else task.get(k, getattr(d, k)))
                      for k in ("x_range", "amplitude", "frequency", "phase", "noise_std")})

    def to_card(self) -> dict:
        return {"family": "sinusoid", "x_range": list(self.x_range), "amplitude": list(self.amplitude),
                "frequency": list(self.frequency), "phase": list(self.phase), "noise_std": self.noise_std}

    def sample_task(self, generator: torch.Generator | None = None) -> SinusoidTask:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        a, f, p = (_draw(r, g) for r in (self.amplitude, self.frequency, self.phase))
        return SinusoidTask(noise_std=self.noise_std, x_range=self.x_range, amplitude=a, frequency=f, phase=p)


Prior = MixturePrior | LinearPrior | SinusoidPrior


# ---- The family registry: add a family here (and nowhere else) ----------------------------


@dataclass(frozen=True)
class Family:
    name: str  # as a card's "task" entry names it
    kind: str  # DENSITY or REGRESSION
    prior: type  # the prior class: from_card(dict), to_card(), sample_task(generator), capabilities
    label: str  # for people


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("gaussian_mixture", DENSITY, MixturePrior, "Gaussian mixture"),
        Family("linear", REGRESSION, LinearPrior, "linear regression"),
        Family("sinusoid", REGRESSION, SinusoidPrior, "sinusoid regression"),
    )
}
DEFAULT_FAMILY = "gaussian_mixture"  # cards written before families existed
REGRESSION_FAMILIES = {f.name: f.prior for f in FAMILIES.values() if f.kind == REGRESSION}
DENSITY_FAMILIES = tuple(f.name for f in FAMILIES.values() if f.kind == DENSITY)


def get_family(name: str) -> Family:
    """The registered family `name`; an unknown name is a TaskFamilyError listing the known ones."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise TaskFamilyError(f"unknown task family {name!r}; known families: {sorted(FAMILIES)}") from None


# ---- Finite task pools (Raventos et al. 2023: memorise or generalise) ---------------------------

MAX_TASK_POOL = 4096  # the cap: the card stores every task's parameters (~200 bytes each)
_SHARED = ("noise_std", "x_range")  # regression task fields the pool's prior fixes for every task


def check_pool_size(size: object) -> int:
    """A task pool size M: a whole number in [0, MAX_TASK_POOL] (0: no pool, the full prior), else a
    TaskPoolError that says what was wrong."""
    if isinstance(size, bool) or not isinstance(size, int | float | str):
        raise TaskPoolError(f"task pool size must be a whole number in [0, {MAX_TASK_POOL}], got {size!r}")
    try:
        value = float(size)
    except ValueError:
        raise TaskPoolError(f"task pool size must be a whole number, got {size!r}") from None
    if not (math.isfinite(value) and value == int(value)):
        raise TaskPoolError(f"task pool size must be a whole number, got {size!r}")
    if not 0 <= value <= MAX_TASK_POOL:
        raise TaskPoolError(f"task pool size must lie in [0, {MAX_TASK_POOL}] (0: the full prior), "
                            f"got {size!r}")
    return int(value)


def task_params(task: GaussianMixture | RegressionTask) -> dict:
    """A pool task's own parameters as plain JSON numbers (float64 reprs read back exactly)."""
    if isinstance(task, GaussianMixture):
        d: dict = {"means": task.means.double().tolist()}
        if task.isotropic:
            d["stds"] = task.stds.double().tolist()  # type: ignore[union-attr]
        else:
            d["covs"] = task.covariances().tolist()
        return d
    return {f.name: float(getattr(task, f.name)) for f in fields(task) if f.name not in _SHARED}


_REGRESSION_TASKS: dict[str, type[RegressionTask]] = {"linear": LinearTask, "sinusoid": SinusoidTask}


def task_from_params(prior: Prior, params: dict) -> GaussianMixture | RegressionTask:
    """The task that `task_params` wrote, under the pool's prior (which fixes the family and, for
    regression, the noise and the x-range)."""
    if isinstance(prior, MixturePrior):
        means = torch.tensor(params["means"], dtype=torch.float64)
        if "covs" in params:
            return GaussianMixture(means, covs=torch.tensor(params["covs"], dtype=torch.float64))
        return GaussianMixture(means, torch.tensor(params["stds"], dtype=torch.float64))
    cls = _REGRESSION_TASKS[prior.family]
    own = {f.name for f in fields(cls)} - set(_SHARED)
    if set(params) != own:
        raise ValueError(f"a {prior.family} task has parameters {sorted(own)}, got {sorted(params)}")
    return cls(noise_std=prior.noise_std, x_range=prior.x_range, **{k: float(v) for k, v in params.items()})


@dataclass(frozen=True)
class TaskPool:
    """M tasks drawn once from `prior` (the generator seeded with `seed`); training on a pool draws
    each sequence's task uniformly from these M instead of fresh from the prior. It offers the
    prior's interface for drawing (`sample_task`, `sample_batch`, `capabilities`), so a trainer or
    a table can take either."""

    prior: Prior
    tasks: tuple[GaussianMixture | RegressionTask, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        check_pool_size(len(self.tasks))
        if not self.tasks:
            raise TaskPoolError("a task pool needs at least one task (size 0 means the full prior)")

    @classmethod
    def draw(cls, prior: Prior, size: int, seed: int = 0) -> TaskPool:
        """M = size tasks, drawn in order from one generator seeded with `seed`."""
        m = check_pool_size(size)
        if m == 0:
            raise TaskPoolError("a task pool needs at least one task (size 0 means the full prior)")
        g = torch.Generator().manual_seed(int(seed))
        return cls(prior, tuple(prior.sample_task(g) for _ in range(m)), int(seed))

    @property
    def size(self) -> int:
        return len(self.tasks)

    @property
    def capabilities(self) -> Capabilities:
        return self.prior.capabilities

    def sample_task(self, generator: torch.Generator | None = None) -> GaussianMixture | RegressionTask:
        """One of the M tasks, uniformly."""
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        return self.tasks[int(torch.randint(self.size, (), generator=g))]

    def sample_batch(
        self, n_tasks: int, n_points: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, list]:
        """(n_tasks, n_points, 2) contexts, each from a task drawn uniformly from the pool."""
        return _task_batch(self.sample_task, n_tasks, n_points, generator)

    def context(self, seed: int, n: int) -> tuple[int, torch.Tensor]:
        """(index, points): pool task number seed mod M and n of its points, drawn with a generator
        seeded with `seed` (the Density page's "draw from the pool")."""
        index = int(seed) % self.size
        return index, self.tasks[index].sample(int(n), torch.Generator().manual_seed(int(seed)))

    def to_card(self) -> dict:
        """The card's "pool" entry: size, seed and every task's parameters (the pool is then read
        back from the card alone, whatever the sampler code does later)."""
        return {"size": self.size, "seed": self.seed, "tasks": [task_params(t) for t in self.tasks]}

    @classmethod
    def from_card(cls, prior: Prior, entry: dict) -> TaskPool:
        """The pool a card's "pool" entry stores, under the card's prior (a TaskPoolError if broken)."""
        try:
            params: Sequence[dict] = entry["tasks"]
            tasks = tuple(task_from_params(prior, p) for p in params)
            pool = cls(prior, tasks, int(entry.get("seed", 0)))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            if isinstance(e, TaskPoolError):
                raise
            raise TaskPoolError(f"the card's task pool cannot be read: {e}") from None
        if int(entry.get("size", pool.size)) != pool.size:
            raise TaskPoolError(f"the card's task pool says size {entry.get('size')} but stores "
                                f"{pool.size} tasks")
        return pool

