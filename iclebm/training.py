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
    objective: str = "cd"  # regression: "cd" (y-only negatives) or "exact" (1-D quadrature likelihood)
    y_grid: int = 64  # regression "exact": quadrature nodes over the box's y-range

    def __post_init__(self) -> None:
        self.box = (float(self.box[0]), float(self.box[1]))
        if not self.box[0] < self.box[1]:
            raise ValueError("box must be [lo, hi] with lo < hi")
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

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        """The data of one update: sequences (B, N, 2) and their Langevin negatives (B, N, C, 2)."""
        seq, init = self.sample_batch()
        with autocast(self.device, self.amp):
            return seq, sample_negatives(self.model, seq, init, self.config, self._chain_generators)

    def loss(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on one batch (a subclass may swap it, e.g. exact NLL in iclebm.mdn)."""
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
