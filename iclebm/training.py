"""Vectorised contrastive-divergence training (paper, Fig. 2), without Python loops.

One step:
1. Draw B fresh tasks from the prior and N + N_extra points from each; the first N
   form the sequence, the rest only seed chains.
2. Real energies E(x_n | x_<n) for all n: one causal forward (`learned_energies`).
3. Negatives for every position n and chain c: Langevin on E(. | x_<n), all B x N x C
   chains at once through the cached-context query path with a prefix mask.
   Chains start either uniform over the box (finds and removes spurious modes far
   from the data) or at a later point x_m, m >= n, of the same task: by
   exchangeability x_m is an exact sample of the true conditional p(x | x_<n), so
   these are Hinton's data-started CD chains, which keep the local shape calibrated.
4. loss = mean E(real) - mean E(neg) + alpha * (mean f_real^2 + mean f_neg^2),
   where f is the learned network part of the energy: penalising the fixed
   quadratic base term as well would teach the network to cancel it.

The exact-likelihood objective (`objective="exact"`), which only a low-dimensional
input allows: in 2-D the partition function is a grid sum, so the loss is the
grid-normalised NLL  E(x_n | x_<n) + log sum_g exp(-E(g | x_<n)) * cell_area,  averaged
over all tasks and positions, with one prefix-masked query batch of the grid under
every prefix (no Langevin, no negatives). The grid is R x R cells over the box, shifted
by one random offset per task and step (u ~ U[0, 1)^2 in cell units): each shifted grid
sum is an unbiased estimate of the integral of exp(-E) over the box, so the model
cannot hide mass between fixed grid points, and a coarse grid suffices. The component
stds (0.33-0.5) are 1.5-2.3x below the default cell (24 / 32 = 0.75): for a Gaussian
the Riemann sum's relative error is about 2 exp(-2 pi^2 sigma^2 / h^2), 2 % at sigma =
0.33 before jitter and averaged out by it; evaluation keeps a fixed 200 x 200 grid.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from .devices import autocast, check_amp
from .distributed import DistInfo, DistributedError, all_true, check_batch_split
from .errors import TrainingDivergedError
from .model import EnergyConfig, EnergyTransformer
from .sampling import langevin_cached
from .tasks import MixturePrior, is_regression, prior_from_card

OBJECTIVES = ("cd", "exact")
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
    # "cd" (contrastive divergence) | "exact": for densities the grid-normalised NLL (2-D only),
    # for regression the 1-D quadrature likelihood of y
    objective: str = "cd"
    grid_resolution: int = 32  # density "exact": cells per axis of the jittered grid
    exact_positions: int = 0  # density "exact": random positions per step (0: all context_len)
    y_grid: int = 64  # regression "exact": quadrature nodes over the box's y-range
    # density "exact" with importance points (0: the plain jittered grid): per position, this many
    # extra points from a kernel mixture around the prefix (see `proposal_points`); the grid then
    # only has to catch mass far from the data and can be coarse
    kernel_points: int = 0
    kernel_std: float = 0.5  # std of the Gaussian around each prefix point
    broad_std: float = 3.0  # std of the one broad Gaussian at the origin (the only kernel at n = 0)

    def __post_init__(self) -> None:
        self.box = (float(self.box[0]), float(self.box[1]))
        if not self.box[0] < self.box[1]:
            raise ValueError("box must be [lo, hi] with lo < hi")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
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


def chain_init(
    seq_all: torch.Tensor, n_positions: int, chains: int, data_frac: float,
    box: tuple[float, float], generator: torch.Generator,
) -> torch.Tensor:
    """Starting points (B, N, C, 2) for the negatives of positions n = 0..N-1.

    seq_all: (B, N + extra, 2) points of each task. A chain of position n starts at a
    uniformly chosen point x_m with n <= m < N + extra with probability data_frac,
    else uniform over the box.
    """
    b, total, _ = seq_all.shape
    n = n_positions
    lo, hi = box
    uniform = lo + (hi - lo) * torch.rand(b, n, chains, 2, generator=generator, dtype=seq_all.dtype)
    pos = torch.arange(n, dtype=seq_all.dtype)[None, :, None]  # (1, N, 1)
    u = torch.rand(b, n, chains, generator=generator, dtype=seq_all.dtype)
    idx = (pos + u * (total - pos)).long().clamp_max(total - 1)  # m in [n, total)
    data = torch.gather(seq_all, 1, idx.reshape(b, -1, 1).expand(-1, -1, 2)).reshape(b, n, chains, 2)
    use_data = torch.rand(b, n, chains, 1, generator=generator) < data_frac
    return torch.where(use_data, data, uniform)


def cd_loss(
    model: EnergyTransformer, seq: torch.Tensor, negatives: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Contrastive-divergence loss for seq (B, N, 2) and negatives (B, N, C, 2), vectorised."""
    n = seq.shape[1]
    cache = model.encode_context(seq)  # one context pass gives the real energies and the cache
    f_real = cache.learned  # (B, N)
    f_neg = model.learned_energy_cached(negatives, cache, torch.arange(n))  # (B, N, C)
    e_real = f_real + model.base_energy(seq)
    e_neg = f_neg + model.base_energy(negatives)
    cd = e_real.mean() - e_neg.mean()
    loss = cd + alpha * ((f_real**2).mean() + (f_neg**2).mean())
    return loss, {"cd": cd.item(), "e_real": e_real.mean().item(), "e_neg": e_neg.mean().item()}


def jittered_grid(
    box: tuple[float, float], resolution: int, offset: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Grid points (B, R*R, 2), row-major with x fastest, and the cell area.

    offset: (B, 2) in cell units, in [0, 1): point (i, j) of task b is lo + h * ((i, j) + offset[b]).
    offset = 0.5 gives the cell centres of `evaluate.grid_points`.
    """
    lo, hi = box
    h = (hi - lo) / resolution
    idx = torch.arange(resolution, dtype=offset.dtype)
    yy, xx = torch.meshgrid(idx, idx, indexing="ij")
    cells = torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)  # (G, 2)
    return lo + h * (cells[None] + offset[:, None, :]), h * h


@dataclass
class KernelDraws:
    """Importance points around each prefix for the exact objective (see `proposal_points`)."""

    points: torch.Tensor  # (B, P, M, 2): M draws for each of the P positions
    box: tuple[float, float]
    kernel_std: float
    broad_std: float


def exact_nll_loss(
    model: EnergyTransformer, seq: torch.Tensor, grid: torch.Tensor, cell_area: float,
    positions: torch.Tensor | None = None, kernel: KernelDraws | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Grid-normalised NLL, averaged over tasks and positions. seq (B, N, 2), grid (B, G, 2).

    NLL_n = E(x_n | x_<n) + log(sum_g exp(-E(g | x_<n)) * cell_area); the grid goes through the
    cached query path once, shared by all prefix groups (query token (n, g) sees x_<n).
    positions: (P,) distinct positions to average over (default all N); a uniformly random
    subset gives an unbiased estimate of the all-position mean at P/N of the grid cost.
    kernel: importance points around each prefix; Z_n then comes from the grid and those points
    together (`importance_log_z`), so the grid only has to catch mass far from the data.
    """
    n = seq.shape[1]
    cache = model.encode_context(seq)
    pos = torch.arange(n, device=seq.device) if positions is None else positions.to(seq.device)
    x = seq[:, pos]  # (B, P, 2)
    e_real = model._total(cache.learned[:, pos], x, pos[None, :])  # (B, P)
    e_grid = model.energy_cached(grid[:, None], cache, pos)  # (B, P, G)
    if kernel is None:
        log_z = torch.logsumexp(-e_grid, dim=-1) + math.log(cell_area)  # (B, P)
    else:
        e_kern = model.energy_cached(kernel.points, cache, pos)  # (B, P, M)
        log_z = importance_log_z(e_grid, grid, e_kern, kernel.points, seq, pos, kernel.box,
                                 kernel.kernel_std, kernel.broad_std)
    loss = (e_real + log_z).mean()
    return loss, {"nll": loss.item(), "e_real": e_real.mean().item(), "log_z": log_z.mean().item()}


def kernel_log_density(
    x: torch.Tensor, seq: torch.Tensor, positions: torch.Tensor, kernel_std: float, broad_std: float
) -> torch.Tensor:
    """log q_p(x) of the kernel proposal of each position: x (B, P, M, 2) -> (B, P, M).

    q_p = (N(0, broad_std^2 I) + sum_{i < n_p} N(x_i, kernel_std^2 I)) / (n_p + 1), n_p = positions[p]:
    a kernel density of the prefix plus one broad Gaussian, so every point of the plane is covered.
    """
    n = seq.shape[1]
    d2 = ((x[:, :, :, None, :] - seq[:, None, None, :, :]) ** 2).sum(-1)  # (B, P, M, N)
    log_k = -0.5 * d2 / kernel_std**2 - math.log(2 * math.pi * kernel_std**2)
    hidden = torch.arange(n, device=x.device)[None, :] >= positions[:, None]  # (P, N): not in the prefix
    log_k = log_k.masked_fill(hidden[None, :, None, :], float("-inf"))
    log_b = -0.5 * (x * x).sum(-1) / broad_std**2 - math.log(2 * math.pi * broad_std**2)  # (B, P, M)
    log_sum = torch.logsumexp(torch.cat([log_b[..., None], log_k], -1), -1)
    return log_sum - torch.log1p(positions.to(x.dtype))[None, :, None]


def proposal_points(
    seq: torch.Tensor, positions: torch.Tensor, m: int, kernel_std: float, broad_std: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """m draws from each position's kernel proposal (see `kernel_log_density`) for one task.

    seq: (1, N, 2) on the CPU; returns (1, P, m, 2). A draw picks one of the n_p + 1 kernels
    uniformly (index 0: the broad one) and adds its Gaussian noise.
    """
    p = positions.shape[0]
    u = torch.rand(p, m, generator=generator, dtype=seq.dtype)
    pick = (u * (positions[:, None] + 1).to(seq.dtype)).long().clamp_max(positions[:, None])  # (P, m)
    centre = seq[0][(pick - 1).clamp_min(0)]  # (P, m, 2); pick 0 -> the broad kernel at the origin
    broad = (pick == 0)[..., None]
    centre = torch.where(broad, torch.zeros_like(centre), centre)
    std = torch.where(broad, torch.full_like(centre, broad_std), torch.full_like(centre, kernel_std))
    return (centre + std * torch.randn(p, m, 2, generator=generator, dtype=seq.dtype))[None]


def importance_log_z(
    e_grid: torch.Tensor, grid: torch.Tensor, e_kern: torch.Tensor, kern: torch.Tensor, seq: torch.Tensor,
    positions: torch.Tensor, box: tuple[float, float], kernel_std: float, broad_std: float,
) -> torch.Tensor:
    """Unbiased-in-Z estimate of log Z_p = log of the integral over the box of exp(-E(x | x_<n_p)).

    e_grid (B, P, G) at the jittered grid (B, G, 2), one point per cell; e_kern (B, P, M) at the
    kernel draws kern (B, P, M, 2). Multiple importance sampling with the balance heuristic: each
    grid cell is a technique with one uniform draw (density 1/cell area inside its cell), the kernel
    mixture one technique with M draws, so every point x is weighed by
        1 / (G / |box| + M q_p(x)),
    and the sum of exp(-E) times these weights is an unbiased estimate of Z_p. Kernel draws that
    fall outside the box contribute 0. With M = 0 this is the plain grid sum times the cell area.
    """
    lo, hi = box
    g, m = grid.shape[1], kern.shape[2]
    log_g = math.log(g / (hi - lo) ** 2)
    if m == 0:
        return torch.logsumexp(-e_grid, dim=-1) - log_g
    log_m = math.log(m)
    grid_p = grid[:, None].expand(-1, positions.shape[0], -1, -1)
    den_grid = torch.logaddexp(torch.full_like(e_grid, log_g),
                               log_m + kernel_log_density(grid_p, seq, positions, kernel_std, broad_std))
    den_kern = torch.logaddexp(torch.full_like(e_kern, log_g),
                               log_m + kernel_log_density(kern, seq, positions, kernel_std, broad_std))
    inside = ((kern >= lo) & (kern < hi)).all(-1)  # (B, P, M)
    terms_kern = (-e_kern - den_kern).masked_fill(~inside, float("-inf"))
    return torch.logsumexp(torch.cat([-e_grid - den_grid, terms_kern], -1), dim=-1)


def cd_loss_reference(
    model: EnergyTransformer, seq: torch.Tensor, negatives: torch.Tensor, alpha: float
) -> torch.Tensor:
    """The paper's loop form: one full forward per position x chain. For tests and bench."""
    b, n, c, _ = negatives.shape
    f_real = model.learned_energies(seq)
    f_neg = torch.zeros(b, n, c, dtype=seq.dtype, device=seq.device)
    for pos in range(n):
        for ch in range(c):
            s = seq[:, : pos + 1].clone()
            s[:, -1] = negatives[:, pos, ch]
            f_neg[:, pos, ch] = model.learned_energies(s)[:, -1]
    e_real = f_real + model.base_energy(seq)
    e_neg = f_neg + model.base_energy(negatives)
    return e_real.mean() - e_neg.mean() + alpha * ((f_real**2).mean() + (f_neg**2).mean())


def sample_negatives(
    model: EnergyTransformer, seq: torch.Tensor, init: torch.Tensor, cfg: TrainConfig,
    generator: torch.Generator | list[torch.Generator],
) -> torch.Tensor:
    """Langevin negatives for every position and chain at once. init: (B, N, C, 2).

    generator: one for the batch, or one per task (row b's noise from generator b)."""
    with torch.no_grad():
        cache = model.encode_context(seq)
    return langevin_cached(
        model, cache, init, cfg.langevin_steps, cfg.step_size, cfg.noise_std, cfg.grad_clip_x,
        lengths=torch.arange(seq.shape[1]), box=cfg.box, generator=generator,
    )


def sample_negatives_reference(
    model: EnergyTransformer, seq: torch.Tensor, init: torch.Tensor, cfg: TrainConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """The reference's per-position x per-chain Langevin loop (full re-run each step)."""
    b, n, c, _ = init.shape
    out = torch.empty_like(init)
    for pos in range(n):
        for ch in range(c):
            x = init[:, pos, ch].clone()
            for _ in range(cfg.langevin_steps):
                x.requires_grad_(True)
                s = torch.cat([seq[:, :pos], x[:, None]], dim=1)
                (g,) = torch.autograd.grad(model.energies(s)[:, -1].sum(), x)
                with torch.no_grad():
                    norm = g.norm(dim=-1, keepdim=True)
                    g = g * (cfg.grad_clip_x / norm.clamp_min(cfg.grad_clip_x))
                    noise = torch.randn(x.shape, generator=generator).to(x.device)
                    x = x - cfg.step_size * g + cfg.noise_std * noise
                    x = x.clamp(*cfg.box)
            out[:, pos, ch] = x.detach()
    return out


class _LossModule(torch.nn.Module):
    """Holds the model so DistributedDataParallel can wrap it; forward(fn) evaluates a loss closure.

    The energy model is used through several methods (context pass, query path), not one
    forward, so DDP's forward hook runs around the whole loss instead.
    """

    def __init__(self, model: EnergyTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, loss_fn: Callable[[], tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
        return loss_fn()


class Trainer:
    """Owns a model, its optimiser and the data stream; one `step()` is one update.

    Thread use: `run` may execute in a background thread; `stop()` from any thread ends
    it after the current step, and `snapshot()` returns a consistent copy for display.
    A step whose loss or gradients are NaN/inf is skipped and the last good weights
    are restored; the event is reported in that step's metrics.
    """

    def __init__(
        self, model: EnergyTransformer | None = None, config: TrainConfig | None = None,
        model_config: EnergyConfig | None = None, max_bad_steps: int = 20,
        device: torch.device | str | None = None, dist: DistInfo | None = None, amp: bool = False,
    ) -> None:
        self.config = config or TrainConfig()
        self.dist = dist or DistInfo()
        # This rank's share of the global batch: tasks [task_lo, task_lo + local_batch).
        self.local_batch = check_batch_split(int(self.config.batch_size), self.dist.world_size)
        self.task_lo = self.dist.rank * self.local_batch
        if model is None:
            with torch.random.fork_rng():  # seeded init without reseeding the caller's global RNG
                torch.manual_seed(self.config.seed)
                model = EnergyTransformer(model_config or EnergyConfig())
        self.device = torch.device(device) if device is not None else model.device
        self.model = model.to(self.device)
        self.model.train()
        check_amp(amp, self.device)
        self.amp = amp
        self.prior = prior_from_card(self.config.task)
        self.generator = torch.Generator().manual_seed(self.config.seed)  # reseeded every step
        self._chain_generators: list[torch.Generator] = []
        self.ddp: torch.nn.Module | None = None
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            if not torch.distributed.is_initialized():
                raise DistributedError(
                    f"world size {self.dist.world_size} needs a process group: call "
                    "iclebm.distributed.init_from_env first (torchrun sets the environment)"
                )

            ids = [self.device.index] if self.device.type == "cuda" else None
            # DDP syncs gradients when the loss is computed through its forward (see _objective).
            self.ddp = DistributedDataParallel(_LossModule(self.model), device_ids=ids)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.step_count = 0
        self.history: list[dict] = []
        self.events: list[str] = []
        self.max_bad_steps = max_bad_steps
        self._bad_in_row = 0
        self._good_state = copy.deepcopy(self.model.state_dict())
        self._stop = threading.Event()
        self.lock = threading.Lock()  # guards model weights + history against concurrent readers

    # ---- schedule -------------------------------------------------------------------

    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        if c.total_steps <= c.warmup or c.lr_min_frac >= 1.0:
            return c.lr
        t = min(1.0, (step - c.warmup) / (c.total_steps - c.warmup))
        return c.lr * (c.lr_min_frac + (1 - c.lr_min_frac) * 0.5 * (1 + math.cos(math.pi * t)))

    # ---- one update -------------------------------------------------------------------

    def sample_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's tasks of the current step: sequences (b, N, 2) and chain starts (b, N, C, 2).

        Task i of the global batch is drawn on the CPU from its own generator seeded with
        task_seed(seed, step, i), which then also drives that task's Langevin noise; the results
        move to the model's device. The step stream `self.generator` is reseeded too.
        """
        c = self.config
        self.generator.manual_seed(task_seed(c.seed, self.step_count, STEP_STREAM))
        seqs, inits, gens = [], [], []
        for i in range(self.task_lo, self.task_lo + self.local_batch):
            g = torch.Generator().manual_seed(task_seed(c.seed, self.step_count, i))
            pts = self.prior.sample_task(g).sample(c.context_len + c.extra_points, g)[None]
            pts = pts.to(self.model.dtype)
            inits.append(chain_init(pts, c.context_len, c.chains, c.data_init_frac, c.box, g))
            seqs.append(pts[:, : c.context_len])
            gens.append(g)
        self._chain_generators = gens
        return torch.cat(seqs).to(self.device), torch.cat(inits).to(self.device)

    def _objective(self, loss_fn: Callable[[], tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
        """Evaluate the loss (through DDP when data-parallel, so backward averages gradients)."""
        with autocast(self.device, self.amp):
            if self.ddp is not None:
                return self.ddp(loss_fn)
            return loss_fn()

    def next_batch(self) -> tuple:
        """The data of one update: sequences (B, N, 2) and their Langevin negatives (B, N, C, 2);
        for the exact objective, sequences, this step's jittered grid (B, G, 2), its cell area, the
        positions to average over (None: all) and the kernel draws (None without kernel_points)."""
        c = self.config
        seq, init = self.sample_batch()
        if c.objective == "exact":
            # one grid offset per task (from that task's generator), positions from the step stream
            offset = torch.stack([torch.rand(2, generator=g) for g in self._chain_generators])
            grid, area = jittered_grid(c.box, c.grid_resolution, offset.to(seq.dtype))
            pos = None
            if 0 < c.exact_positions < c.context_len:
                perm = torch.randperm(c.context_len, generator=self.generator)
                pos = perm[: c.exact_positions].sort().values
            kernel = None
            if c.kernel_points > 0:
                pos = torch.arange(c.context_len) if pos is None else pos
                seq_cpu = seq.cpu()
                points = torch.cat([
                    proposal_points(seq_cpu[i : i + 1], pos, c.kernel_points, c.kernel_std, c.broad_std, g)
                    for i, g in enumerate(self._chain_generators)
                ])
                kernel = KernelDraws(points.to(seq.device), c.box, c.kernel_std, c.broad_std)
            return seq, grid.to(seq.device), area, pos, kernel
        with autocast(self.device, self.amp):
            return seq, sample_negatives(self.model, seq, init, self.config, self._chain_generators)

    def loss(self, batch: tuple) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on one batch (a subclass may swap it, e.g. exact NLL in iclebm.mdn)."""
        if self.config.objective == "exact":
            seq, grid, area, pos, kernel = batch
            return exact_nll_loss(self.model, seq, grid, area, pos, kernel)
        seq, negatives = batch
        return cd_loss(self.model, seq, negatives, self.config.alpha)

    def step(self) -> dict:
        c = self.config
        t0 = time.perf_counter()
        batch = self.next_batch()
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.lock:
            self.optimizer.zero_grad(set_to_none=True)
            loss, stats = self._objective(lambda: self.loss(batch))
            # Every rank must take the same branch (backward all-reduces): agree on finiteness.
            finite = all_true(bool(torch.isfinite(loss)), self.dist, self.device)
            grad_norm = float("nan")
            if finite:
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip))
                finite = math.isfinite(grad_norm)  # gradients are synced, so ranks agree
            if finite:
                self.optimizer.step()
                finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
            metrics = {
                "step": self.step_count, "loss": float(loss.item()), "grad_norm": grad_norm, "lr": lr,
                **stats, "seconds": time.perf_counter() - t0, "skipped": not finite,
            }
            if finite:
                self._good_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self._bad_in_row = 0
                self.step_count += 1
            else:
                # Restore the last good weights and reset Adam's moments, which may hold inf.
                self.model.load_state_dict(self._good_state)
                self.optimizer.state.clear()
                self._bad_in_row += 1
                msg = f"step {self.step_count}: non-finite loss or gradient; skipped, last good weights kept"
                self.events.append(msg)
                metrics["event"] = msg
            self.history.append(metrics)
        if self._bad_in_row >= self.max_bad_steps:
            raise TrainingDivergedError(
                f"{self._bad_in_row} non-finite steps in a row; lower the learning rate or Langevin step size"
            )
        return metrics

    def run(self, n_steps: int, callback: Callable[[dict], object] | None = None) -> list[dict]:
        """Up to n_steps updates; stops early when `stop()` is called or callback returns False."""
        self._stop.clear()
        out = []
        for _ in range(int(n_steps)):
            if self._stop.is_set():
                break
            m = self.step()
            out.append(m)
            if callback is not None and callback(m) is False:
                break
        return out

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> tuple[EnergyTransformer, list[dict]]:
        """A detached eval-mode copy of the model and a copy of the history, taken under the lock."""
        with self.lock:
            model = copy.deepcopy(self.model).eval()
            history = list(self.history)
        return model, history

    # ---- resuming ----------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "step_count": self.step_count,
        }

    def load_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step_count = int(state["step_count"])
        self._good_state = copy.deepcopy(self.model.state_dict())


def make_trainer(
    model: EnergyTransformer | None = None, config: TrainConfig | None = None,
    model_config: EnergyConfig | None = None, **kwargs,
) -> Trainer:
    """The trainer for the config's task family (regression families get RegressionTrainer)."""
    if config is not None and is_regression(config.task):
        from .regression import RegressionTrainer

        return RegressionTrainer(model=model, config=config, model_config=model_config, **kwargs)
    return Trainer(model=model, config=config, model_config=model_config, **kwargs)
