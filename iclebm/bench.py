"""Speed benchmark: `python -m iclebm bench [--quick] [--repeats R] [--checkpoint PATH]`.

Every ratio is measured side by side in one run (median of repeats, wall clock, float32,
torch's current CPU threads):

(a) full-context heatmap, N = 32, 200 x 200 grid: the cached query path (`model.energy`)
    vs the naive way (append each grid point to the context and run `model.energies` on
    (M, N+1, 2) sequences, in chunks), plain and with gradients w.r.t. the queries (the
    arrow field); also the largest |cached - naive| difference.
(b) all-prefix film strip, N = 32, 100 x 100 grid: `energy_all_prefixes` vs naive per prefix.
(c) one CD training step (B = 32, N = 32, C = 4, 15 Langevin steps) incl. backward:
    vectorised (`sample_negatives` + `cd_loss`) vs the reference loops
    (`sample_negatives_reference` + `cd_loss_reference`).
(d) Langevin, 1000 particles x 100 steps under a 32-point context.
(e) the app's default heatmap: 100 x 100 grid energies plus a 20 x 20 arrow field (autograd)
    under N = 32 and N = 64 contexts (target < 200 ms).

The slow naive/reference sides take seconds to minutes each and run `slow_repeats` times
(default once; the table states the repeats of each side). `--quick` shrinks every
size so the whole run takes seconds (used by the tests).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from iclebm.card import box_of, prior_from_card, prior_of
from iclebm.checkpoints import CHECKPOINT_DIR, DEFAULT_CHECKPOINT, load_checkpoint
from iclebm.devices import compile_model, describe, synchronize
from iclebm.dynamics.langevin import SamplerConfig, langevin, uniform_init
from iclebm.dynamics.thinking import ThinkingConfig, predict
from iclebm.grid import grid_points, y_axis
from iclebm.models.energy import EnergyTransformer
from iclebm.models.regression import column_energies
from iclebm.objectives.cd import (
    cd_loss,
    cd_loss_reference,
    chain_init,
    sample_negatives,
    sample_negatives_reference,
)
from iclebm.tasks import DENSITY, MixturePrior
from iclebm.training.config import TrainConfig
from iclebm.training.presets import get_preset
from iclebm.training.trainer import Trainer


@dataclass
class Sizes:
    heat_res: int = 200
    heat_n: int = 32
    film_res: int = 100
    film_n: int = 32
    cd_batch: int = 32
    cd_n: int = 32
    cd_chains: int = 4
    cd_steps: int = 15
    lv_particles: int = 1000
    lv_steps: int = 100
    lv_n: int = 32
    app_res: int = 100
    app_arrows: int = 20
    app_ns: tuple[int, ...] = (32, 64)
    naive_chunk: int = 2048


QUICK = Sizes(
    heat_res=24,
    heat_n=8,
    film_res=12,
    film_n=6,
    cd_batch=4,
    cd_n=6,
    cd_chains=2,
    cd_steps=3,
    lv_particles=100,
    lv_steps=10,
    lv_n=8,
    app_res=30,
    app_arrows=8,
    app_ns=(8, 16),
    naive_chunk=256,
)


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time over repeats (after no warm-up beyond the first call) and the last result."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # kernels are asynchronous: time them to completion
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def get_model(checkpoint: str | Path | None = None) -> tuple[EnergyTransformer, str]:
    """The given checkpoint, else the shipped one when it exists, else a fresh mog2d-sized model."""
    path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    if checkpoint is not None or path.exists():
        model = load_checkpoint(path)
        return model, f"checkpoint {path.name} (step {model.card.get('training', {}).get('steps', '?')})"

    preset = get_preset("mog2d")
    torch.manual_seed(0)
    model = EnergyTransformer(preset.model).eval()
    model.card = {"task": preset.train.task, "box": list(preset.box), "sampler": preset.sampler.to_dict()}
    return model, "fresh untrained model with the mog2d preset config (no shipped checkpoint found)"


def naive_energy(
    model: EnergyTransformer, query: torch.Tensor, context: torch.Tensor, chunk: int, grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """E(q | context) by appending each query to the context: query (M, 2), context (N, 2) -> (M,).

    With grad, also dE/dq (M, 2) from the same full re-runs.
    """
    energies, grads = [], []
    for q in query.split(chunk):
        if grad:
            last = q.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                seq = torch.cat([context[None].expand(q.shape[0], -1, -1), last[:, None]], dim=1)
                e = model.energies(seq)[:, -1]
                (g,) = torch.autograd.grad(e.sum(), last)
            grads.append(g)
            energies.append(e.detach())
        else:
            seq = torch.cat([context[None].expand(q.shape[0], -1, -1), q[:, None]], dim=1)
            with torch.no_grad():
                energies.append(model.energies(seq)[:, -1])
    return torch.cat(energies), (torch.cat(grads) if grad else None)


def cached_energy(
    model: EnergyTransformer, query: torch.Tensor, context: torch.Tensor, grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not grad:
        with torch.no_grad():
            return model.energy(query[None], context[None])[0], None
    q = query.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        e = model.energy(q[None], context[None])[0]
        (g,) = torch.autograd.grad(e.sum(), q)
    return e.detach(), g


def app_heatmap(
    model: EnergyTransformer, context: torch.Tensor, box: tuple[float, float], res: int, arrows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the app computes per redraw: grid energies (res^2) and -grad E on an arrows^2 grid."""
    grid, _ = grid_points(box, res)
    agrid, _ = grid_points(box, arrows)
    with torch.no_grad():
        e = model.energy(grid.to(model.dtype)[None], context[None])[0]
    q = agrid.to(model.dtype).requires_grad_(True)
    with torch.enable_grad():
        ea = model.energy(q[None], context[None])[0]
        (g,) = torch.autograd.grad(ea.sum(), q)
    return e, -g


def _train_config(sz: Sizes, prior: MixturePrior, box: tuple[float, float]) -> TrainConfig:
    return TrainConfig(batch_size=sz.cd_batch, context_len=sz.cd_n, chains=sz.cd_chains,
                       langevin_steps=sz.cd_steps, box=box, task=prior.to_card())


def throughput(
    model: EnergyTransformer, sz: Sizes, prior: MixturePrior, box: tuple[float, float], repeats: int,
    devices: list[torch.device], compile_: bool = False,
) -> list[dict]:
    """Training throughput and the app heatmap on each device (a copy of the model on each).

    A training step is `Trainer.step()` (draw tasks on the CPU, Langevin negatives, CD loss,
    backward, Adam) after one warm-up step; steps/s = 1 / median step time and context tokens/s
    = B * N / step time (each step also runs B * N * C query tokens through 2 * L + 1 passes).
    With compile_, the same on a torch.compile'd copy (its warm-up step includes compilation).
    """
    out = []
    variants = [False, True] if compile_ else [False]
    for dev in devices:
        for comp in variants:
            m = copy.deepcopy(model).to(dev)
            if comp:
                compile_model(m)
            trainer = Trainer(model=m, config=_train_config(sz, prior, box), device=dev)

            def step(trainer: Trainer = trainer, dev: torch.device = dev) -> None:
                trainer.step()
                synchronize(dev)

            step()  # warm-up (and compilation)
            t, _ = _time(step, repeats)
            m.eval()
            ctx = prior.sample_task(torch.Generator().manual_seed(5)).sample(sz.heat_n).to(dev)

            def heat(m: EnergyTransformer = m, ctx: torch.Tensor = ctx, dev: torch.device = dev) -> None:
                app_heatmap(m, ctx, box, sz.app_res, sz.app_arrows)
                synchronize(dev)

            heat()
            t_h, _ = _time(heat, repeats)
            out.append({
                "device": describe(dev) + (" + torch.compile" if comp else ""),
                "step_s": t, "steps_per_s": 1 / t, "tokens_per_s": sz.cd_batch * sz.cd_n / t,
                "heatmap_s": t_h,
            })
    return out


def format_throughput(rows: list[dict], sz: Sizes, cuda_note: str | None) -> str:
    lines = [
        f"Training throughput (B={sz.cd_batch} tasks x N={sz.cd_n} points, C={sz.cd_chains} chains, "
        f"{sz.cd_steps} Langevin steps) and the app heatmap ({sz.app_res}x{sz.app_res} + arrows, "
        f"N={sz.heat_n}) per device:",
        "",
        "| device | train step | steps/s | context tokens/s | app heatmap |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['device']} | {_fmt_t(r['step_s'])} | {r['steps_per_s']:.2f} | "
                     f"{r['tokens_per_s']:.0f} | {_fmt_t(r['heatmap_s'])} |")
    if cuda_note:
        lines.append(f"| cuda | {cuda_note} | | | |")
    return "\n".join(lines)


class _DensityBench:
    """The density rows (a)-(e) of `run_bench`: cached vs naive, vectorised vs loops, and the app's
    costs. One method per row group; they share the model, the sizes, the task stream `g` (drawn in
    the same order as always, so the contexts are the same) and the table being built."""

    def __init__(self, model: EnergyTransformer, sz: Sizes, device: torch.device, repeats: int,
                 slow_repeats: int, quick: bool) -> None:
        self.model, self.sz, self.device = model, sz, device
        self.repeats, self.slow_repeats, self.quick = repeats, slow_repeats, quick
        self.box = box_of(model)
        self.prior = prior_of(model, DENSITY, "the density bench")
        self.g = torch.Generator().manual_seed(0)
        self.rows: list[dict] = []
        self.checks: list[str] = []

    def ctx_of(self, n: int) -> torch.Tensor:
        return self.prior.sample_task(self.g).sample(n, self.g).to(self.model.dtype)

    def row(self, name: str, fast: float, slow: float | None, n_fast: int, n_slow: int | None,
            target: str) -> None:
        self.rows.append({
            "name": name,
            "fast_s": fast,
            "slow_s": slow,
            "ratio": (slow / fast) if slow is not None and fast > 0 else None,
            "repeats": f"{n_fast}" + (f"/{n_slow}" if n_slow is not None else ""),
            "target": "(full sizes only)" if self.quick else target,
        })

    def heatmap(self) -> None:
        """(a) full-context heatmap, with and without gradients w.r.t. the queries."""
        model, sz, rep, slow = self.model, self.sz, self.repeats, self.slow_repeats
        ctx = self.ctx_of(sz.heat_n)
        grid = grid_points(self.box, sz.heat_res)[0].to(model.dtype)
        cached_energy(model, grid[:16], ctx)  # warm-up
        t_c, (e_c, _) = _time(lambda: cached_energy(model, grid, ctx), rep)
        t_n, (e_n, _) = _time(lambda: naive_energy(model, grid, ctx, sz.naive_chunk), slow)
        name = f"(a) heatmap {sz.heat_res}x{sz.heat_res}, N={sz.heat_n}: cached vs naive"
        self.row(name, t_c, t_n, rep, slow, ">= 20x")
        t_cg, (e_cg, g_c) = _time(lambda: cached_energy(model, grid, ctx, grad=True), rep)
        t_ng, (e_ng, g_n) = _time(lambda: naive_energy(model, grid, ctx, sz.naive_chunk, grad=True), slow)
        self.row("(a) same + grad wrt queries (arrow field)", t_cg, t_ng, rep, slow, ">= 20x")
        max_e = float(e_n.abs().max())
        d_e = float((e_c - e_n).abs().max())
        d_g = float((g_c - g_n).abs().max())
        rel = d_e / max(max_e, 1e-12)
        self.checks.append(
            f"max |cached - naive| energy = {d_e:.2e} (max |E| = {max_e:.3g}, relative {rel:.1e}); "
            f"gradient = {d_g:.2e} (max |grad| = {float(g_n.abs().max()):.3g})"
        )

    def film_strip(self) -> None:
        """(b) every prefix's landscape in one batch vs one naive heatmap per prefix."""
        model, sz = self.model, self.sz
        ctx = self.ctx_of(sz.film_n)
        fgrid = grid_points(self.box, sz.film_res)[0].to(model.dtype)

        def film_cached() -> torch.Tensor:
            with torch.no_grad():
                return model.energy_all_prefixes(fgrid[None], ctx[None])[0]

        def film_naive() -> torch.Tensor:
            return torch.stack(
                [naive_energy(model, fgrid, ctx[:n], sz.naive_chunk)[0] for n in range(sz.film_n + 1)]
            )

        t_c, f_c = _time(film_cached, self.repeats)
        t_n, f_n = _time(film_naive, self.slow_repeats)
        self.row(f"(b) film strip {sz.film_res}x{sz.film_res}, N={sz.film_n} (all {sz.film_n + 1} prefixes)",
                 t_c, t_n, self.repeats, self.slow_repeats, ">= 15x")
        self.checks.append(f"film strip max |cached - naive| = {float((f_c - f_n).abs().max()):.2e}")

    def cd_step(self) -> None:
        """(c) one contrastive-divergence step, vectorised vs the reference's loops."""
        model, sz, box, g = self.model, self.sz, self.box, self.g
        tcfg = TrainConfig(batch_size=sz.cd_batch, context_len=sz.cd_n, chains=sz.cd_chains,
                           langevin_steps=sz.cd_steps, box=box, task=self.prior.to_card())
        seq_all, _ = self.prior.sample_batch(sz.cd_batch, sz.cd_n + tcfg.extra_points, g)
        seq_all = seq_all.to(model.dtype)
        init = chain_init(seq_all, sz.cd_n, sz.cd_chains, tcfg.data_init_frac, box, g).to(self.device)
        seq = seq_all[:, : sz.cd_n].to(self.device)
        model.train()

        def cd_vec() -> float:
            model.zero_grad(set_to_none=True)
            neg = sample_negatives(model, seq, init, tcfg, torch.Generator().manual_seed(1))
            loss, _ = cd_loss(model, seq, neg, tcfg.alpha)
            loss.backward()
            return float(loss.detach())

        def cd_ref() -> float:
            model.zero_grad(set_to_none=True)
            neg = sample_negatives_reference(model, seq, init, tcfg, torch.Generator().manual_seed(1))
            loss = cd_loss_reference(model, seq, neg, tcfg.alpha)
            loss.backward()
            return float(loss.detach())

        t_c, _ = _time(cd_vec, self.repeats)
        t_n, _ = _time(cd_ref, self.slow_repeats)
        model.zero_grad(set_to_none=True)
        model.eval()
        self.row(f"(c) CD step B={sz.cd_batch} N={sz.cd_n} C={sz.cd_chains} {sz.cd_steps} Langevin steps: "
                 "vectorised vs loops", t_c, t_n, self.repeats, self.slow_repeats, ">= 20x")

    def langevin(self) -> None:
        """(d) the card's sampler on many particles under a full context."""
        model, sz, box = self.model, self.sz, self.box
        ctx = self.ctx_of(sz.lv_n)
        sampler = SamplerConfig.from_dict(model.card.get("sampler", {}))
        init_p = uniform_init(sz.lv_particles, box, generator=self.g)

        def run_langevin() -> torch.Tensor:
            return langevin(model, ctx, init_p, sz.lv_steps, sampler.step_size, sampler.noise_std,
                            sampler.grad_clip, box=box, generator=torch.Generator().manual_seed(2))

        lv_repeats = 1 if self.quick else min(self.repeats, 3)
        t_l, _ = _time(run_langevin, lv_repeats)
        self.row(f"(d) Langevin {sz.lv_particles} particles x {sz.lv_steps} steps, N={sz.lv_n}", t_l, None,
                 lv_repeats, None, "report (prototype 2.7 s)")

    def app_heatmaps(self) -> None:
        """(e) what one click costs the app: heatmap + arrow field for several context sizes."""
        model, sz, box = self.model, self.sz, self.box
        for n in sz.app_ns:
            if n > model.config.max_context:
                cap = model.config.max_context
                self.checks.append(f"(e) skipped N={n}: the model reads at most {cap} points")
                continue
            ctx = self.ctx_of(n)
            app_heatmap(model, ctx, box, sz.app_res, sz.app_arrows)  # warm-up
            t_a, _ = _time(lambda c=ctx: app_heatmap(model, c, box, sz.app_res, sz.app_arrows), self.repeats)
            res, arrows = sz.app_res, sz.app_arrows
            name = f"(e) app heatmap {res}x{res} + {arrows}x{arrows} arrows, N={n}"
            self.row(name, t_a, None, self.repeats, None, "< 200 ms")


def run_bench(
    checkpoint: str | Path | None = None,
    quick: bool = False,
    repeats: int = 5,
    print_fn: Callable[[str], object] = print,
    slow_repeats: int = 1,
    device: torch.device | None = None,
    compile_: bool = False,
    throughput_only: bool = False,
) -> dict:
    """Run every benchmark, print the tables, and return the numbers as a dict.

    (a)-(e) run on `device` (default CPU); the throughput table runs on the CPU and, when
    `device` is a GPU, on it too, side by side.
    """
    sz = QUICK if quick else Sizes()
    repeats = max(1, int(repeats))
    slow_repeats = max(1, int(slow_repeats))
    device = torch.device("cpu") if device is None else torch.device(device)
    model, source = get_model(checkpoint)
    model.eval()
    model.to(device)
    bench = _DensityBench(model, sz, device, repeats, slow_repeats, quick)
    cfg = model.config
    print_fn(
        f"model: {source}; d={cfg.d_model}, layers={cfg.n_layer}, heads={cfg.n_head}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{'quick sizes' if quick else 'full sizes'}; median of {repeats} repeats "
        f"(slow reference sides: {slow_repeats})"
    )
    if not throughput_only:  # (a)-(e): cached vs naive, vectorised vs loops
        bench.heatmap()
        bench.film_strip()
        bench.cd_step()
        bench.langevin()
        bench.app_heatmaps()
        regression_bench(bench.row, bench.checks, repeats, quick)
        print_fn(format_bench(bench.rows))
        for c in bench.checks:
            print_fn(c)

    # (f) throughput per device
    devices = [torch.device("cpu")] + ([device] if device.type != "cpu" else [])
    cuda_note = None if torch.cuda.is_available() else "not available on this machine (no CUDA GPU): CPU only"
    tp = throughput(model.to("cpu"), sz, bench.prior, bench.box, repeats, devices, compile_)
    print_fn("")
    print_fn(format_throughput(tp, sz, cuda_note))
    return {
        "throughput": tp,
        "device": describe(device),
        "model": source,
        "quick": quick,
        "repeats": repeats,
        "rows": bench.rows,
        "checks": bench.checks,
        "threads": torch.get_num_threads(),
    }


def regression_bench(row: Callable[..., None], checks: list[str], repeats: int, quick: bool,
                     checkpoint: str | Path | None = None) -> None:
    """(g) the Regression page's work on the shipped linear-regression model: the per-column
    p(y | x, D) heatmap and a thinking run (y_hat at 100 x after the card's default steps)."""

    path = Path(checkpoint) if checkpoint else CHECKPOINT_DIR / "linreg.safetensors"
    if not path.exists():
        checks.append(f"(g) skipped: no regression checkpoint at {path}")
        return
    model = load_checkpoint(path)
    prior = prior_from_card(model.card["task"])
    box = box_of(model)
    g = torch.Generator().manual_seed(0)
    res = 40 if quick else 100
    n = 32
    ctx = prior.sample_task(g).sample(n, g).double()[None]
    ys, h = y_axis(box, res)
    xs = ys[None]
    t_h, e = _time(lambda: column_energies(model, xs, ctx, ys), repeats)
    peak = float((torch.exp(-e - torch.logsumexp(-e, -1, keepdim=True)) / h).amax(-1).median())
    row(f"(g) regression heatmap {res}x{res} p(y | x, D) per column, N={n}", t_h, None, repeats, None,
        "report")
    think = ThinkingConfig.from_dict(model.card.get("thinking"))
    t_t, _ = _time(lambda: predict(model, xs, ctx), repeats)
    row(f"(g) thinking: y_hat at {res} x, {think.steps} steps of size {think.step_size:g}, N={n}", t_t, None,
        repeats, None, "report")
    checks.append(f"(g) {path.name}: median peak of p(y | x, D) over the columns {peak:.3f}")


def _fmt_t(s: float | None) -> str:
    if s is None:
        return ""
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def format_bench(rows: list[dict]) -> str:
    head = "| benchmark | fast | naive / reference | ratio | repeats | target |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] is not None else ""
        lines.append(
            f"| {r['name']} | {_fmt_t(r['fast_s'])} | {_fmt_t(r['slow_s'])} | {ratio} | "
            f"{r['repeats']} | {r['target']} |"
        )
    return "\n".join(lines)
