"""The device check: every preset through every path on one device (`python -m iclebm check-device`).

For each preset: a few training steps with each objective it allows, a small evaluation, the
temperature and sampler calibration, Langevin, thinking (regression), the landscape and film strip
(the regression view for regression presets), the inspector, contexts-to-weights, `compare --quick`
and the throughput bench, each on fresh random weights (the check is about where tensors live,
not about quality). Sizes are small; on the CPU the models are shrunk too, so that the whole check
runs in about a minute on two cores and can sit in the test suite. A path passes when it finishes
and its numbers are finite and on the right device; a failure keeps its one-line reason.
"""

from __future__ import annotations

import copy
import math
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from iclebm.devices import autocast, check_amp, describe
from iclebm.dynamics.langevin import SamplerConfig, langevin, uniform_init
from iclebm.dynamics.thinking import predict
from iclebm.models.energy import EnergyTransformer
from iclebm.models.mixture import MixtureConfig, MixtureDensityTransformer
from iclebm.tasks import DENSITY, REGRESSION
from iclebm.training.presets import PRESETS, Preset, get_preset
from iclebm.training.trainer import MixtureTrainer, Trainer, make_trainer

TRAIN_STEPS = 2
CPU_MODEL = {"n_layer": 1, "d_model": 16, "n_head": 2}  # --device cpu: shrunk models, same kind


class CheckFailed(AssertionError):
    """A path ran but produced something wrong (non-finite numbers, a tensor on the wrong device)."""


@dataclass
class CheckRow:
    path: str  # "<preset>: <path>"
    ok: bool
    seconds: float
    reason: str = ""  # one line, for a failure
    detail: str = ""  # the traceback, shown with --debug


@dataclass
class _Case:
    """One preset on the device: its settings, a model with random weights and a context to read."""

    name: str
    preset: Preset
    model: EnergyTransformer | MixtureDensityTransformer
    points: np.ndarray  # (N, 2) a context drawn from the preset's prior
    device: torch.device
    amp: bool
    small: bool

    @property
    def kind(self) -> str:
        return REGRESSION if self.preset.thinking is not None else DENSITY

    @property
    def energy_model(self) -> bool:
        return isinstance(self.model, EnergyTransformer)

    @property
    def box(self) -> tuple[float, float]:
        return self.preset.box


def _finite(x: torch.Tensor | np.ndarray | float, what: str) -> None:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise CheckFailed(f"{what} has non-finite values")


def _on(x: torch.Tensor, device: torch.device, what: str) -> None:
    if x.device.type != device.type:
        raise CheckFailed(f"{what} is on {x.device}, the model on {device}")


def _model_config(preset: Preset, small: bool) -> EnergyTransformer | MixtureDensityTransformer:
    cfg = replace(preset.model, **CPU_MODEL) if small else preset.model
    torch.manual_seed(0)
    if isinstance(cfg, MixtureConfig):
        return MixtureDensityTransformer(cfg)
    return EnergyTransformer(cfg)


def _make_case(name: str, device: torch.device, amp: bool, small: bool) -> _Case:
    """The preset's model (random weights, shrunk when small) on the device, its card, a context."""
    preset = get_preset(name)
    model = _model_config(preset, small).to(device).eval()
    model.card = {"task": preset.train.task, "box": list(preset.box), "sampler": preset.sampler.to_dict()}
    if preset.thinking is not None:  # a few thinking steps are enough to cross every line
        steps = 3 if small else preset.thinking.steps
        model.card["thinking"] = replace(preset.thinking, steps=steps).to_dict()
    from iclebm.card import prior_of

    prior = prior_of(model.card, REGRESSION if preset.thinking is not None else DENSITY, "check-device")
    g = torch.Generator().manual_seed(1)
    points = prior.sample_task(g).sample(6, g).double().numpy()
    return _Case(name, preset, model, points, device, amp, small)


# ---- the paths ------------------------------------------------------------------------------


def _train(case: _Case, objective: str | None) -> None:
    p = case.preset
    settings = dict(batch_size=4, context_len=8, extra_points=2, chains=2, langevin_steps=2, y_grid=8,
                    grid_resolution=4, exact_positions=4, kernel_points=min(p.train.kernel_points, 4))
    cfg = replace(p.train, **settings, **({"objective": objective} if objective else {}))
    mc = replace(p.model, **CPU_MODEL) if case.small else p.model
    trainer: Trainer
    if isinstance(mc, MixtureConfig):
        trainer = MixtureTrainer(config=cfg, model_config=mc, device=case.device, amp=case.amp)
    else:
        trainer = make_trainer(config=cfg, model_config=mc, device=case.device, amp=case.amp)
    for _ in range(TRAIN_STEPS):
        m = trainer.step()
        if m["skipped"]:
            raise CheckFailed(f"step {m['step']} was skipped: {m.get('event', 'non-finite')}")
    for q in trainer.model.parameters():
        _on(q, case.device, "a parameter")
        _finite(q, "a parameter")


def _evaluate(case: _Case) -> None:
    if case.kind == REGRESSION:
        from iclebm.evaluation.regression import regression_table, thinking_curve

        table = regression_table(case.model, n_tasks=2, n_test=4, ns=(0, 2), resolution=16,  # type: ignore[arg-type]
                                 bayes_samples=200)
        curve = thinking_curve(case.model, n_values=(2,), steps=(0, 2), n_tasks=2, n_test=4)  # type: ignore[arg-type]
        _finite(np.array(table["nll"]["model"] + curve["mse"]["2"]), "the regression table")
        return
    from iclebm.evaluation.density import in_context_nll

    table = in_context_nll(case.model, n_tasks=2, ns=(0, 2, 4), n_test=10, resolution=16)  # type: ignore[arg-type]
    _finite(np.array(table["nll"]["model"]), "the NLL table")


def _calibrate(case: _Case) -> None:
    from iclebm.evaluation.calibration import choose_sampler, fit_length_scales

    model = case.model
    scales, _ = fit_length_scales(model, n_knots=3, n_tasks=2, n_test=10, resolution=12)  # type: ignore[arg-type]
    _finite(np.array(scales), "the length scales")
    choose_sampler(model, [SamplerConfig(steps=3)], n_tasks=1, n_particles=20)  # type: ignore[arg-type]
    calibrated = copy.deepcopy(model)  # the scales in use: energies per position, and for queries
    calibrated.config.length_scales = scales
    seq = torch.as_tensor(case.points, dtype=torch.float32)[None].to(case.device)
    _finite(calibrated.energies(seq), "the calibrated energies")  # type: ignore[arg-type]
    _finite(calibrated.energy(seq, seq[:, :3]), "the calibrated query energies")  # type: ignore[arg-type]


def _langevin(case: _Case) -> None:
    g = torch.Generator().manual_seed(0)
    ctx = torch.as_tensor(case.points, dtype=torch.float32)[None].to(case.device)
    init = uniform_init(16, case.box, generator=g, batch=1).to(case.device)
    with autocast(case.device, case.amp):
        out = langevin(case.model, ctx, init, 3, 0.05, 0.1, 20.0, box=case.box, generator=g)  # type: ignore[arg-type]
    _on(out, case.device, "the particles")
    _finite(out, "the particles")


def _thinking(case: _Case) -> None:
    ctx = torch.as_tensor(case.points, dtype=torch.float32)[None].to(case.device)
    x = torch.linspace(-2, 2, 5, device=case.device)[None]
    g = torch.Generator().manual_seed(0)
    for starts, gen in ((1, None), (3, g)):
        y = predict(case.model, x, ctx, steps=3, starts=starts, generator=gen)  # type: ignore[arg-type]
        _on(y, case.device, "the prediction")
        _finite(y, "the prediction")


def _landscape(case: _Case) -> None:
    if case.kind == REGRESSION:
        from iclebm.probes.regression_view import compute_regression_view

        view = compute_regression_view(case.model, case.points, case.box, resolution=8, max_steps=3)  # type: ignore[arg-type]
        _finite(view.log_density, "the regression view")
        return
    from iclebm.probes.landscape import compute_film_strip, compute_landscape, langevin_animation

    land = compute_landscape(case.model, case.points, case.box, resolution=10, arrow_resolution=4)  # type: ignore[arg-type]
    _finite(land.energy, "the landscape")
    _finite(land.arrow_uv, "the arrows")  # type: ignore[arg-type]
    strip = compute_film_strip(case.model, case.points, case.box, resolution=8)  # type: ignore[arg-type]
    _finite(strip.energy, "the film strip")
    traj = langevin_animation(case.model, case.points, case.box, n_particles=8, steps=3, step_size=0.05,  # type: ignore[arg-type]
                              noise_std=0.1, init="context", max_frames=3)
    _finite(traj.positions, "the animation")


def _inspect(case: _Case) -> None:
    from iclebm.probes.inspector import grid_attention, grid_influence, inspect_query

    insp = inspect_query(case.model, case.points, case.points[0] + 0.1)  # type: ignore[arg-type]
    _finite(insp.weights, "the attention")
    _finite(insp.influence, "the influence")
    _finite(grid_attention(case.model, case.points, case.box, 6), "the attention map")  # type: ignore[arg-type]
    _finite(grid_influence(case.model, case.points, case.box, 6), "the influence map")  # type: ignore[arg-type]


def _ctx2weights(case: _Case) -> None:
    from iclebm.probes.ctx2weights import FineTuneConfig, distances, fine_tune, in_context_reference

    ref = in_context_reference(case.model, case.points, case.box, 8, case.points[:2])  # type: ignore[arg-type]
    for objective in ("exact", "cd"):
        cfg = FineTuneConfig(steps=1, objective=objective, resolution=4, chains=8, langevin_steps=2)
        res = fine_tune(case.model, case.points, cfg, case.box, short_context=case.points[:2],  # type: ignore[arg-type]
                        heldout=case.points[:2], display_resolution=8)
        if res.status != "done":
            raise CheckFailed(f"the {objective} fine-tune ended '{res.status}': {res.message}")
        _finite(np.array(distances(ref, res.snapshots)["hellinger"]), "the distances")


def _compare(case: _Case) -> None:
    from iclebm.card import prior_of
    from iclebm.evaluation.compare import QUICK, compare

    prior = prior_of(case.model.card, DENSITY, "compare")
    settings = {**QUICK, "resolution": 12, "n_test": 10} if case.small else dict(QUICK)
    # in family, and (off the CPU, where it costs little) out of it: no Bayes row there
    families = ["training prior"] if case.small else ["training prior", "two moons"]
    result = compare({case.name: case.model}, prior, case.box, only=families, **settings)
    for fam in result["families"].values():
        _finite(np.array(fam["nll"][case.name], dtype=np.float64), "the comparison")


def _bench(case: _Case) -> None:
    from iclebm.bench import QUICK, throughput
    from iclebm.card import prior_of

    prior = prior_of(case.model.card, DENSITY, "bench")
    rows = throughput(case.model, QUICK, prior, case.box, 1, [case.device])  # type: ignore[arg-type]
    _finite(np.array([rows[0]["steps_per_s"], rows[0]["heatmap_s"]]), "the throughput")


# ---- the plan --------------------------------------------------------------------------------


def _objectives(case: _Case) -> list[str | None]:
    if not case.energy_model:
        return [None]  # the mixture peer's exact NLL, its one objective
    return ["cd", "exact"]  # densities (grid NLL) and regression (1-D quadrature) allow both


def _plan(case: _Case) -> Iterator[tuple[str, Callable[[], None]]]:
    """(path name, check) for every path this preset supports."""
    for o in _objectives(case):
        yield f"train {o or 'nll'}", lambda o=o: _train(case, o)
    yield "evaluate", lambda: _evaluate(case)
    if case.energy_model and case.kind == DENSITY:
        yield "calibrate", lambda: _calibrate(case)
    if case.kind == DENSITY:
        yield "langevin", lambda: _langevin(case)
    else:
        yield "thinking", lambda: _thinking(case)
    yield "landscape + film strip" if case.kind == DENSITY else "regression view", lambda: _landscape(case)
    if case.energy_model:
        yield "inspect", lambda: _inspect(case)
    if case.energy_model and case.kind == DENSITY:
        yield "ctx2weights", lambda: _ctx2weights(case)
        yield "bench throughput", lambda: _bench(case)
    if case.kind == DENSITY:
        yield "compare --quick", lambda: _compare(case)


def _timed(path: str, fn: Callable[[], None], device: torch.device) -> CheckRow:
    from iclebm.devices import synchronize

    t0 = time.perf_counter()
    try:
        fn()
        synchronize(device)
    except Exception as e:  # noqa: BLE001 - every failure becomes a row with its reason
        first = (str(e).strip().splitlines() or [""])[0]
        return CheckRow(path, False, time.perf_counter() - t0, f"{type(e).__name__}: {first}",
                        traceback.format_exc())
    return CheckRow(path, True, time.perf_counter() - t0)


def run_device_check(
    device: torch.device, amp: bool = False, presets: list[str] | None = None, small: bool | None = None,
    progress: Callable[[CheckRow], object] | None = None,
) -> list[CheckRow]:
    """Every path of every preset (or of `presets`) on `device`; one row per path, failures kept.

    small (default: on the CPU) shrinks the models; amp runs under bf16 autocast (CUDA only)."""
    check_amp(amp, device)
    small = device.type == "cpu" if small is None else small
    rows = []
    for name in presets or list(PRESETS):
        try:
            case = _make_case(name, device, amp, small)
        except Exception as e:  # noqa: BLE001 - a preset that cannot even be built is one failed row
            reason = f"{type(e).__name__}: {e}"
            rows.append(CheckRow(f"{name}: setup", False, 0.0, reason, traceback.format_exc()))
            continue
        for path, fn in _plan(case):
            row = _timed(f"{name}: {path}", fn, device)
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def format_check_table(rows: list[CheckRow], device: torch.device, amp: bool) -> str:
    """A Markdown table (path, result, seconds), the failures' reasons below it."""
    failed = [r for r in rows if not r.ok]
    total = sum(r.seconds for r in rows)
    lines = [f"Device check on {describe(device)}{' with bf16 autocast' if amp else ''}: "
             f"{len(rows) - len(failed)}/{len(rows)} paths pass in {total:.1f} s", "",
             "| path | result | seconds |", "|---|---|---|"]
    lines += [f"| {r.path} | {'pass' if r.ok else 'FAIL'} | {r.seconds:.2f} |" for r in rows]
    if failed:
        lines += ["", "Failures:"] + [f"- {r.path}: {r.reason}" for r in failed]
    return "\n".join(lines)


def check_passed(rows: list[CheckRow]) -> bool:
    return bool(rows) and all(r.ok for r in rows) and all(math.isfinite(r.seconds) for r in rows)


def run_check_command(device_name: str, amp: bool = False, presets: list[str] | None = None,
                      debug: bool = False, quiet: bool = False) -> int:
    """`python -m iclebm check-device`: the table on stdout, progress on stderr; 0 when every path
    passes, 1 otherwise (with each failure's reason; its traceback too with debug). A device this
    machine lacks, or --amp off CUDA, raises DeviceError (the CLI's one-line refusal, exit 2)."""
    import sys

    from iclebm.devices import resolve_device

    device = resolve_device(device_name)
    check_amp(amp, device)
    unknown = sorted(set(presets or []) - set(PRESETS))
    if unknown:
        raise ValueError(f"unknown presets {unknown}; choose from {sorted(PRESETS)}")
    t0 = time.perf_counter()

    def progress(row: CheckRow) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - t0:6.1f} s] {row.path}: {'pass' if row.ok else 'FAIL'}",
                  file=sys.stderr, flush=True)

    rows = run_device_check(device, amp, presets, progress=progress)
    print(format_check_table(rows, device, amp))
    if debug:
        for r in rows:
            if not r.ok:
                print(f"\n--- {r.path}\n{r.detail}", file=sys.stderr)
    return 0 if check_passed(rows) else 1
