"""How accurate is the Gibbs posterior predictive? python benchmarks/bayes_accuracy.py

(1) Gibbs vs exact enumeration for n = 4, 6, 8 (8 held-out tasks of the shipped prior, 30 test
points each), default and long runs; (2) at n = 16 and 32, where nothing is enumerable, the
64-task mean NLL of the default run against a long run (32 chains x 40 sweeps) and a second seed.
"""

from __future__ import annotations

import numpy as np
import torch

from iclebm.evaluation.bayes import GibbsConfig, mixture_log_predictive_batch
from iclebm.tasks import MixturePrior

PRIOR = MixturePrior()
LONG = GibbsConfig(chains=32, sweeps=40, seed=2)


def draw(n_tasks: int, n_ctx: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    ctx, tasks = PRIOR.sample_batch(n_tasks, n_ctx, g)
    test = torch.stack([t.sample(n_test, g) for t in tasks])
    return ctx.double().numpy(), test.double().numpy()


def main() -> None:
    ctx, test = draw(8, 8, 30, seed=7)
    print("Gibbs vs exact enumeration (8 tasks x 30 test points), |difference| of log p in nats:")
    for n in (4, 6, 8):
        exact = mixture_log_predictive_batch(ctx[:, :n], test, PRIOR, method="exact")
        for name, cfg in (("default 8x20", GibbsConfig()), ("long 32x40", LONG)):
            gibbs = mixture_log_predictive_batch(ctx[:, :n], test, PRIOR, method="gibbs", gibbs=cfg)
            d = np.abs(gibbs - exact)
            task = np.abs(gibbs.mean(1) - exact.mean(1)).max()
            print(f"  n={n} {name}: mean {d.mean():.4f}  max {d.max():.4f}  worst task-mean {task:.4f}")
    ctx, test = draw(64, 32, 200, seed=5)
    print("64 tasks x 200 test points: mean NLL of the default run vs a second seed and a long run:")
    for n in (16, 32):
        runs = [mixture_log_predictive_batch(ctx[:, :n], test, PRIOR, gibbs=cfg)
                for cfg in (GibbsConfig(), GibbsConfig(seed=1), LONG)]
        nll = [-r.mean() for r in runs]
        task = max(np.abs(r.mean(1) - runs[2].mean(1)).max() for r in runs[:2])
        print(f"  n={n}: {nll[0]:.4f} (seed 0), {nll[1]:.4f} (seed 1), {nll[2]:.4f} (long); "
              f"worst task-mean difference to the long run {task:.4f}")


if __name__ == "__main__":
    main()
