"""The training configuration (one dataclass for every family and objective) and the per-task seeds."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from iclebm.objectives import resolve_objective
from iclebm.tasks import MixturePrior, check_pool_size

STEP_STREAM = 2**32  # task_seed index of the per-step stream (tasks use 0 .. batch_size - 1)


def task_seed(seed: int, step: int, index: int) -> int:
    """Seed of global task `index` at optimiser step `step` (numpy SeedSequence hash of the three).

    The training data (tasks, points, chain starts and Langevin noise) of a task depends only on
    (seed, step, index), so any split of the global batch across data-parallel ranks trains on
    exactly the batch a single process would see, and resuming needs only the step count.
    """
    state = np.random.SeedSequence([int(seed), int(step), int(index)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


@dataclass
class TrainConfig:
    batch_size: int = 32  # tasks per step
    context_len: int = 32  # points per task (positions trained)
    extra_points: int = 8  # extra points per task used only to start data chains
    chains: int = 4  # negatives per position
    langevin_steps: int = 15
    step_size: float = 0.05
    noise_std: float = 0.316
    grad_clip_x: float = 20.0  # clip on |grad_x E| inside Langevin
    data_init_frac: float = 0.5  # share of chains started at the task's own later points
    alpha: float = 1e-2  # energy penalty
    lr: float = 1e-3
    lr_min_frac: float = 0.1  # cosine decay to lr * lr_min_frac over total_steps (0: constant lr)
    total_steps: int = 0  # for the schedule; 0 keeps the lr constant after warm-up
    warmup: int = 50
    grad_clip: float = 1.0  # clip on the parameter gradient norm
    box: tuple[float, float] = (-12.0, 12.0)
    seed: int = 0
    task: dict = field(default_factory=lambda: MixturePrior().to_card())
    # a name of iclebm.objectives.OBJECTIVES: "cd" (contrastive divergence) | "exact": for densities the
    # grid-normalised NLL (2-D only), for regression the 1-D quadrature likelihood of y
    objective: str = "cd"
    grid_resolution: int = 32  # density "exact": cells per axis of the jittered grid
    exact_positions: int = 0  # density "exact": random positions per step (0: all context_len)
    # density "exact" with exact_positions: draw position n with probability ~ (n + 1)^-short_bias
    # (without replacement; 0: uniform). Short prefixes, where the models lag Bayes most, then get
    # more of the signal: bias 1 gives positions 0..8 about 60% of the draws at context_len 64
    short_bias: float = 0.0
    y_grid: int = 64  # regression "exact": quadrature nodes over the box's y-range
    # density "exact" with importance points (0: the plain jittered grid): per position, this many
    # extra points from a kernel mixture around the prefix (see `proposal_points`); the grid then
    # only has to catch mass far from the data and can be coarse
    kernel_points: int = 0
    kernel_std: float = 0.5  # std of the Gaussian around each prefix point
    broad_std: float = 3.0  # std of the one broad Gaussian at the origin (the only kernel at n = 0)
    # a finite pool of task_pool tasks drawn once from the prior (seeded by pool_seed) that every
    # sequence's task comes from; 0: a fresh task from the prior for every sequence
    task_pool: int = 0
    pool_seed: int = 0

    def __post_init__(self) -> None:
        self.box = (float(self.box[0]), float(self.box[1]))
        if not self.box[0] < self.box[1]:
            raise ValueError("box must be [lo, hi] with lo < hi")
        self.task_pool = check_pool_size(self.task_pool)  # a TaskPoolError names the cap
        self.objective = resolve_objective(self.objective)  # old names ("nll") read, canonical kept
        if not 2 <= int(self.grid_resolution) <= 512:
            raise ValueError("grid_resolution must lie in [2, 512]")
        if not 0 <= int(self.kernel_points) <= 4096:
            raise ValueError("kernel_points must lie in [0, 4096]")
        if not (self.kernel_std > 0 and self.broad_std > 0):
            raise ValueError("kernel_std and broad_std must be positive")
        for name in ("batch_size", "context_len", "chains"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 <= self.data_init_frac <= 1.0:
            raise ValueError("data_init_frac must lie in [0, 1]")
        if not (0.0 <= self.short_bias <= 4.0):
            raise ValueError(f"short_bias must lie in [0, 4], got {self.short_bias}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError("lr must be a positive number")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box"] = list(self.box)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
