"""Live-training settings for the Train page: the widget bounds, the defaults of the `fast` preset
and the configs built from them. The run itself is `iclebm.ui.jobs.trainer_process`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.objectives import resolve_objective
from iclebm.tasks import MAX_TASK_POOL, check_pool_size
from iclebm.training.config import TrainConfig
from iclebm.training.presets import get_preset

MODES = ("scratch", "finetune")
# Widget bounds: absurd values cannot be entered in the UI, and `make_configs` clamps too.
BOUNDS: dict[str, tuple[float, float]] = {
    "lr": (1e-5, 1e-2),
    "batch_size": (1, 64),
    "context_len": (4, 64),
    "chains": (1, 8),
    "langevin_steps": (1, 50),
    "step_size": (1e-3, 0.5),
    "noise_std": (0.0, 2.0),
    "n_layer": (1, 6),
    "d_model": (8, 128),
    "task_pool": (0, MAX_TASK_POOL),  # 0: the full prior (M = inf)
}


LIVE_PRESET = "fast"  # trains on 32-point contexts; see README "Live training"


def _fast_defaults() -> dict[str, Any]:
    """UI defaults = the `fast` preset, tuned to show in-context learning within a minute on 2 cores."""
    p = get_preset(LIVE_PRESET)
    t = p.train
    return {
        "lr": t.lr, "batch_size": t.batch_size, "context_len": t.context_len, "chains": t.chains,
        "langevin_steps": t.langevin_steps, "step_size": t.step_size, "noise_std": t.noise_std,
        "n_layer": p.model.n_layer, "d_model": p.model.d_model, "objective": t.objective,
        "task_pool": t.task_pool,
    }


FAST_DEFAULTS: dict[str, Any] = _fast_defaults()


def _clamp(name: str, value: float) -> float:
    lo, hi = BOUNDS[name]
    return min(max(value, lo), hi)


def make_configs(
    mode: str, settings: dict[str, Any], base: EnergyTransformer | None = None
) -> tuple[TrainConfig, EnergyConfig | None]:
    """Train (and, from scratch, model) configs from UI settings, on top of the `fast` preset."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    preset = get_preset(LIVE_PRESET)
    s = {**FAST_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    objective = resolve_objective(str(s["objective"]))  # a typed ValueError for an unknown name
    train = replace(
        preset.train,
        lr=float(_clamp("lr", float(s["lr"]))),
        batch_size=int(_clamp("batch_size", int(s["batch_size"]))),
        context_len=int(_clamp("context_len", int(s["context_len"]))),
        chains=int(_clamp("chains", int(s["chains"]))),
        langevin_steps=int(_clamp("langevin_steps", int(s["langevin_steps"]))),
        step_size=float(_clamp("step_size", float(s["step_size"]))),
        noise_std=float(_clamp("noise_std", float(s["noise_std"]))),
        seed=int(s.get("seed", 0)),
        objective=objective,
        task_pool=check_pool_size(s["task_pool"]),  # not clamped: a bad size is a TaskPoolError
    )
    if mode == "finetune":
        if base is None:
            raise ValueError("fine-tuning needs a base model")
        card = base.card or {}
        if isinstance(card.get("task"), dict):
            train = replace(train, task=card["task"])
        if card.get("box"):
            train = replace(train, box=tuple(card["box"]))
        # The base model was trained on contexts up to its own max_context.
        train = replace(train, context_len=min(train.context_len, base.config.max_context))
        return train, None
    n_head = 4
    d_model = int(_clamp("d_model", int(s["d_model"])))
    d_model = max(n_head, d_model - d_model % n_head)
    model_cfg = replace(preset.model, n_layer=int(_clamp("n_layer", int(s["n_layer"]))), d_model=d_model,
                        n_head=n_head)
    train = replace(train, context_len=min(train.context_len, model_cfg.max_context))
    return train, model_cfg
