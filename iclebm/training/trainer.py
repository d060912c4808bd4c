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

import torch

from iclebm.card import family_of, prior_of
from iclebm.devices import autocast, check_amp
from iclebm.errors import TrainingDivergedError
from iclebm.grid import jittered_grid
from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.models.mixture import MixtureConfig, MixtureDensityTransformer
from iclebm.objectives.cd import CDBatch, cd_loss, chain_init, sample_negatives
from iclebm.objectives.exact import ExactBatch, KernelDraws, draw_positions, exact_nll_loss, proposal_points
from iclebm.objectives.mixture import MixtureBatch, nll_loss
from iclebm.objectives.regression import RegressionExactBatch, regression_nll_loss, y_negatives
from iclebm.tasks import DENSITY, REGRESSION, Prior, TaskPool
from iclebm.training.config import STEP_STREAM, TrainConfig, task_seed
from iclebm.training.distributed import DistInfo, DistributedError, all_true, check_batch_split


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

    kind = DENSITY  # the kind of task family this trainer draws (a config of another kind is refused)

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
        self.prior = prior_of({"task": self.config.task}, self.kind, type(self).__name__)
        c = self.config
        # the finite task pool (None: the full prior); `draws` is what every sequence's task comes from
        self.pool = TaskPool.draw(self.prior, c.task_pool, c.pool_seed) if c.task_pool else None
        self.draws: Prior | TaskPool = self.pool if self.pool is not None else self.prior
        self.generator = torch.Generator().manual_seed(self.config.seed)  # reseeded every step
        self._chain_generators: list[torch.Generator] = []
        self.ddp: torch.nn.Module | None = None
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            if not torch.distributed.is_initialized():
                raise DistributedError(
                    f"world size {self.dist.world_size} needs a process group: call "
                    "iclebm.training.distributed.init_from_env first (torchrun sets the environment)"
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
            pts = self.draws.sample_task(g).sample(c.context_len + c.extra_points, g)[None]
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

    def next_batch(self) -> CDBatch | ExactBatch:
        """The data of one update, typed by the config's objective: a CDBatch (sequences and their
        Langevin negatives) for "cd"; an ExactBatch (sequences, this step's jittered grid, its cell
        area, the positions to average over and the kernel draws) for "exact"."""
        c = self.config
        seq, init = self.sample_batch()
        if c.objective == "exact":
            # one grid offset per task (from that task's generator), positions from the step stream
            offset = torch.stack([torch.rand(2, generator=g) for g in self._chain_generators])
            grid, area = jittered_grid(c.box, c.grid_resolution, offset.to(seq.dtype))
            pos = None
            if 0 < c.exact_positions < c.context_len:
                pos = draw_positions(c.context_len, c.exact_positions, c.short_bias, self.generator)
            kernel = None
            if c.kernel_points > 0:
                pos = torch.arange(c.context_len) if pos is None else pos
                seq_cpu = seq.cpu()
                points = torch.cat([
                    proposal_points(seq_cpu[i : i + 1], pos, c.kernel_points, c.kernel_std, c.broad_std, g)
                    for i, g in enumerate(self._chain_generators)
                ])
                kernel = KernelDraws(points.to(seq.device), c.box, c.kernel_std, c.broad_std)
            return ExactBatch(seq, grid.to(seq.device), area, pos, kernel)
        with autocast(self.device, self.amp):
            return CDBatch(seq, sample_negatives(self.model, seq, init, self.config, self._chain_generators))

    def loss(self, batch: CDBatch | ExactBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective of the batch's type (subclasses add theirs: regression, mixture NLL)."""
        if isinstance(batch, ExactBatch):
            return exact_nll_loss(self.model, batch.seq, batch.grid, batch.cell_area, batch.positions,
                                  batch.kernel)
        if isinstance(batch, CDBatch):
            return cd_loss(self.model, batch.seq, batch.negatives, self.config.alpha)
        raise TypeError(f"{type(self).__name__} has no objective for a {type(batch).__name__}")

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


def make_trainer(
    model: EnergyTransformer | None = None, config: TrainConfig | None = None,
    model_config: EnergyConfig | None = None, **kwargs,
) -> Trainer:
    """The trainer for the config's task family (regression families get RegressionTrainer)."""
    if config is not None and family_of({"task": config.task}).kind == REGRESSION:
        return RegressionTrainer(model=model, config=config, model_config=model_config, **kwargs)
    return Trainer(model=model, config=config, model_config=model_config, **kwargs)


class MixtureTrainer(Trainer):
    """The Trainer (schedule, NaN guard, snapshots; resumed by iclebm.training.resume) with the exact-NLL
    objective.

    Of the TrainConfig it uses batch_size, context_len, lr, lr_min_frac, total_steps, warmup,
    grad_clip, seed and task; the Langevin fields are unused (no negatives).
    """

    def __init__(
        self, model: MixtureDensityTransformer | None = None, config: TrainConfig | None = None,
        model_config: MixtureConfig | None = None, max_bad_steps: int = 20,
        device: torch.device | str | None = None, amp: bool = False,
    ) -> None:
        config = config or TrainConfig()
        if model is None:
            with torch.random.fork_rng():  # seeded init without reseeding the caller's global RNG
                torch.manual_seed(config.seed)
                model = MixtureDensityTransformer(model_config or MixtureConfig())
        super().__init__(model=model, config=config, max_bad_steps=max_bad_steps,  # type: ignore[arg-type]
                         device=device, amp=amp)

    def next_batch(self) -> MixtureBatch:  # type: ignore[override]
        c = self.config
        seq, _ = self.draws.sample_batch(c.batch_size, c.context_len, self.generator)
        return MixtureBatch(seq.to(device=self.device, dtype=self.model.dtype))  # drawn on the CPU

    def loss(self, batch: MixtureBatch) -> tuple[torch.Tensor, dict[str, float]]:  # type: ignore[override]
        """The mixture's exact NLL: its one objective, whatever the config's objective says."""
        if not isinstance(batch, MixtureBatch):
            raise TypeError(f"MixtureTrainer has no objective for a {type(batch).__name__}")
        return nll_loss(self.model, batch.seq)  # type: ignore[arg-type]


class RegressionTrainer(Trainer):
    """The density Trainer (schedule, NaN guard, snapshots) with regression data and losses."""

    kind = REGRESSION

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        objective = self.config.objective  # a registry name (TrainConfig checks); regression has both
        if objective not in ("exact", "cd"):
            raise ValueError(f"unknown objective {objective!r} for regression; use 'exact' or 'cd'")

    def next_batch(self) -> RegressionExactBatch | CDBatch:  # type: ignore[override]
        """A RegressionExactBatch (sequences) for "exact"; a CDBatch (sequences, y-only negatives)
        for "cd"."""
        c = self.config
        seq, _ = self.sample_batch()  # per-task seeded draws (chain starts unused: y-negatives start at seq)
        if c.objective == "exact":
            return RegressionExactBatch(seq)
        return CDBatch(seq, y_negatives(self.model, seq, c, self.generator))

    def loss(  # type: ignore[override]
        self, batch: RegressionExactBatch | CDBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The 1-D quadrature NLL of y for a RegressionExactBatch; CD for a CDBatch."""
        c = self.config
        if isinstance(batch, RegressionExactBatch):
            return regression_nll_loss(self.model, batch.seq, c.box, c.y_grid, c.alpha, self.generator)
        if isinstance(batch, CDBatch):
            return cd_loss(self.model, batch.seq, batch.negatives, c.alpha)
        raise TypeError(f"RegressionTrainer has no objective for a {type(batch).__name__}")
