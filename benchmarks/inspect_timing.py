"""Timing of the attention inspector on the shipped model (one torch thread, the app's setting).

    flock /tmp/iclebm-cpu.lock python benchmarks/inspect_timing.py

32 context points from a drawn task: one query's attention + influence + energy, the 60x60
attention map, and the influence map at 40x40 (the app's grid) and 60x60. Median and min.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

import iclebm
from iclebm.probes.inspector import grid_attention, grid_influence, inspect_query
from iclebm.tasks import MixturePrior


def timed(f: Callable[[], object], reps: int) -> str:
    f()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return f"median {np.median(ts) * 1000:.1f} ms, min {np.min(ts) * 1000:.1f} ms ({reps} runs)"


def main() -> None:
    torch.set_num_threads(1)
    model = iclebm.load_checkpoint()
    g = torch.Generator().manual_seed(0)
    pts = MixturePrior().sample_task(g).sample(32, g).numpy()
    box = iclebm.checkpoints.box_of(model)
    print("threads 1, N = 32, shipped model")
    print("inspect_query (1 query):", timed(lambda: inspect_query(model, pts, (0.5, 1.0)), 20))
    print("grid_attention 60x60:", timed(lambda: grid_attention(model, pts, box, 60), 5))
    print("grid_influence 40x40:", timed(lambda: grid_influence(model, pts, box, 40), 3))
    print("grid_influence 60x60:", timed(lambda: grid_influence(model, pts, box, 60), 3))


if __name__ == "__main__":
    main()
