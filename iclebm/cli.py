"""Command line: python -m iclebm train | evaluate | calibrate | bench | inspect | ctx2weights | compare |
render | check-device.

One error style: bad input (a flag out of range, an unusable path, a model of the wrong family) is
refused before any work starts with one line on stderr and exit code 2; an unexpected failure is one
line and exit code 1; --debug shows the traceback instead. Shipped models are read-only (see
_check_output)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

# The evaluation, probe and bench layers are imported inside the commands that use them, so that
# `train` or `--help` does not load scikit-learn and scipy.stats at start-up.
from iclebm.card import box_of, is_regression, pool_entries, prior_from_card, prior_of
from iclebm.checkpoints import (
    CHECKPOINT_DIR,
    DEFAULT_CHECKPOINT,
    _atomic_write,
    app_default_checkpoint,
    card_path,
    load_checkpoint,
    save_checkpoint,
)
from iclebm.devices import DEVICE_CHOICES, compile_model, describe, resolve_device
from iclebm.errors import IclebmError, UnknownObjectiveError
from iclebm.models.energy import EnergyConfig, EnergyTransformer
from iclebm.models.mixture import MixtureConfig
from iclebm.objectives import OBJECTIVES, resolve_objective
from iclebm.tasks import DENSITY, MAX_TASK_POOL
from iclebm.training.distributed import (
    DistInfo,
    any_true,
    barrier,
    check_batch_split,
    init_from_env,
    read_env,
    shutdown,
)
from iclebm.training.presets import PRESETS, get_preset
from iclebm.training.resume import _resume_path, load_train_state, save_train_state
from iclebm.training.trainer import MixtureTrainer, Trainer, make_trainer


def _launch_command(argv: list[str], info: DistInfo) -> str:
    """The command that reproduces this run (the torchrun form for a multi-process run)."""
    tail = "-m iclebm " + shlex.join(argv)
    if not info.distributed:
        return "python " + tail
    nodes = max(1, info.world_size // info.local_world_size)
    return f"torchrun --nnodes={nodes} --nproc_per_node={info.local_world_size} " + tail


def _objective_arg(value: str) -> str:
    """argparse type of --objective: a registry name or alias -> the canonical name ("nll" -> "exact"),
    so old command lines keep working and every config and card gets the canonical name."""
    try:
        return resolve_objective(value)
    except UnknownObjectiveError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _objectives_help(suffix: str) -> str:
    """--objective's help, from the registry: each name, its old names and what it does."""
    parts = [f"{o.name}" + "".join(f" (or {a})" for a in o.aliases) + f": {o.help}"
             for o in OBJECTIVES.values()]
    return "; ".join(parts) + f" ({suffix})"


# ---- input checks: flag types with bounds, output paths, model families --------------------------------

MIN_RESOLUTION = 16  # grid cells per axis: fewer cannot integrate a density (Z is nonsense below this)
MAX_RESOLUTION = 1000
MAX_TASKS = 100_000
MAX_BATCH = 4096  # tasks per step; larger runs out of memory long before it finishes a step
MAX_STEPS = 1_000_000_000
MAX_THREADS = 1024
MAX_SEED = 2**63 - 1


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: a whole number in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return parse


def float_in(lo: float, hi: float = math.inf, *, lo_open: bool = True) -> Callable[[str], float]:
    """argparse type: a finite number in (lo, hi] (or [lo, hi] with lo_open=False)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        below = value <= lo if lo_open else value < lo
        if not math.isfinite(value) or below or value > hi:
            bound = ("> " if lo_open else ">= ") + f"{lo:g}"
            bound += f" and <= {hi:g}" if math.isfinite(hi) else ""
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value
    return parse


RESOLUTION = int_in(MIN_RESOLUTION, MAX_RESOLUTION)
TASKS = int_in(1, MAX_TASKS)
THREADS = int_in(1, MAX_THREADS)
SEED = int_in(0, MAX_SEED)


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error style: one line (no usage block) and exit code 2. Every parser,
    subcommands included (argparse builds them with this class), takes --debug."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the traceback of an error instead of one line")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _is_shipped(path: Path) -> bool:
    """Whether `path` lies in the shipped models' folder (checkpoints/ of the repository)."""
    try:
        return CHECKPOINT_DIR.resolve() in path.resolve().parents
    except OSError:
        return False


def _check_writable(path: Path, what: str) -> None:
    """`path` can be created or replaced: not a folder, its nearest existing folder writable."""
    if path.exists() and not path.is_file():
        raise ValueError(f"{what} {path} is a folder or another non-file; give a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {path} is read-only")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: the folder {parent} is not writable")


def _check_output(path: Path, what: str, *, force: bool, own: bool = False) -> Path:
    """Before any work: `path` is a checkpoint the command may write. Refused (ValueError -> exit 2):
    another suffix than .safetensors (the file written is exactly the one named), the shipped models'
    folder and any existing checkpoint that is not the run's own target (`own`: a resume target or
    the checkpoint whose card --update-card rewrites), unless --force."""
    if path.suffix != ".safetensors":
        raise ValueError(f"{what} {path} must end in .safetensors (e.g. {path.with_suffix('.safetensors')})")
    instead = f"runs/{path.name}"
    if _is_shipped(path) and not force:
        raise ValueError(f"{what} {path} is in {CHECKPOINT_DIR.name}/, the shipped models, which the tools "
                         f"never overwrite: write to {instead} instead (or pass --force to release a model)")
    if path.exists() and not own and not force:
        raise ValueError(f"{what} {path} exists already: choose another path such as {instead} "
                         "(or pass --force to overwrite it)")
    _check_writable(path, what)
    _check_writable(card_path(path), f"{what}'s card")
    return path


def _check_json_out(path: str | None) -> None:
    if path is not None:
        _check_writable(Path(path), "--json")


def _write_json(path: str, obj: object) -> None:
    _atomic_write(Path(path), (json.dumps(obj, indent=2) + "\n").encode(), "json")
    print(f"wrote {path}")


def _load_density_model(path: str | None, what: str, energy_only: bool = True):
    """A checkpoint that `what` can use: trained on 2-D densities (not regression) and, with
    `energy_only`, an energy model (not the exactly normalised mixture transformer)."""
    model = load_checkpoint(path)
    name = Path(path).name if path else DEFAULT_CHECKPOINT.name
    if energy_only and not isinstance(model, EnergyTransformer):
        raise ValueError(f"{what}: {name} is a {type(model).__name__} (exactly normalised); "
                         f"{what} needs an energy model")
    prior_of(model, DENSITY, f"{what} ({name})")
    return model


def _set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


TRAIN_OVERRIDES = ("batch_size", "grid_resolution", "exact_positions", "kernel_points",
                   "short_bias", "task_pool", "pool_seed")  # TrainConfig fields


def cmd_train(args: argparse.Namespace) -> int:
    preset = get_preset(args.preset)
    steps = args.steps if args.steps is not None else preset.steps
    tcfg = replace(preset.train, total_steps=steps, seed=args.seed)
    if args.lr is not None:
        tcfg = replace(tcfg, lr=args.lr)
    if args.objective is not None:
        tcfg = replace(tcfg, objective=args.objective)
    overrides = {k: getattr(args, k) for k in TRAIN_OVERRIDES if getattr(args, k) is not None}
    tcfg = replace(tcfg, **overrides)
    info = read_env()
    check_batch_split(tcfg.batch_size, info.world_size)  # before any rendezvous or file
    out = Path(args.out or f"runs/{args.preset}.safetensors")
    resuming = bool(args.resume and out.exists())
    _check_output(out, "--out", force=args.force, own=resuming)
    _check_writable(_resume_path(out), "the resume state")
    if isinstance(preset.model, MixtureConfig) and info.distributed:
        # MixtureTrainer takes a device (any --device) but has no data-parallel path
        raise ValueError(f"preset {args.preset!r} trains in one process (no torchrun); any --device works")
    info, device = init_from_env(args.device, timeout_s=args.dist_timeout)
    try:
        return _train(args, preset, steps, tcfg, info, device, out)
    finally:
        shutdown(info)


def _resume_mismatches(model, args: argparse.Namespace, preset, tcfg) -> list[str]:
    """What differs between a checkpoint and the run that would resume it: preset, task family and
    prior, architecture, objective (a calibrated model is refused separately)."""
    training = model.card.get("training") or {}
    found = []
    if type(model.config) is not type(preset.model):
        return [f"architecture ({type(model).__name__}, preset {args.preset!r} trains another)"]
    if training.get("preset", args.preset) != args.preset:
        found.append(f"preset ({training.get('preset')!r}, not {args.preset!r})")
    try:
        same_prior = prior_from_card(model.card.get("task")).to_card() == prior_from_card(tcfg.task).to_card()
    except IclebmError:
        same_prior = False
    if not same_prior:
        found.append("task family and prior")
    calibration = ("length_scales", "energy_scale")
    mine = {k: v for k, v in model.config.to_dict().items() if k not in calibration}
    theirs = {k: v for k, v in preset.model.to_dict().items() if k not in calibration}
    if mine != theirs:
        found.append("architecture (" + ", ".join(k for k in theirs if mine.get(k) != theirs[k]) + ")")
    was = training.get("config") or {}
    pool_was = (int(was.get("task_pool", 0)), int(was.get("pool_seed", 0)))
    if pool_was != (tcfg.task_pool, tcfg.pool_seed):
        found.append(f"task pool (M, seed) = {pool_was}, not {(tcfg.task_pool, tcfg.pool_seed)}")
    recorded = (training.get("config") or {}).get("objective")
    if recorded is not None and recorded != tcfg.objective:
        found.append(f"objective ({recorded}, not {tcfg.objective})")
    return found


def _load_resume_target(out: Path, args: argparse.Namespace, preset, tcfg):
    model = load_checkpoint(out)
    mismatches = _resume_mismatches(model, args, preset, tcfg)
    if mismatches:
        raise ValueError(f"--resume: {out} is not a {args.preset!r} run of this recipe; it differs in "
                         + "; ".join(mismatches) + ". Choose another --out to train a new model")
    cfg = model.config
    if getattr(cfg, "length_scales", None) is not None or getattr(cfg, "energy_scale", 1.0) != 1.0:
        # CD trains the raw energy; negatives from a rescaled one would bias it.
        raise ValueError(f"{out} is calibrated; resume from the uncalibrated training checkpoint")
    return model


def _load_init(args: argparse.Namespace, preset):
    model = load_checkpoint(args.init)  # fine-tune: start from these weights, fresh optimiser
    if type(model.config) is not type(preset.model):
        mdn = isinstance(preset.model, MixtureConfig)
        wanted = "MixtureDensityTransformer" if mdn else "EnergyTransformer"
        raise ValueError(f"--init {args.init} holds a {type(model).__name__}; preset {args.preset!r} "
                         f"trains a {wanted}")
    arch = ("n_layer", "n_head", "d_model", "mlp_ratio", "max_context", "input_scale")
    arch += ("base_std",) if isinstance(preset.model, EnergyConfig) else ("n_components",)
    if any(getattr(model.config, k) != getattr(preset.model, k) for k in arch):
        raise ValueError(f"--init {args.init}: its architecture differs from preset {args.preset!r}")
    if isinstance(model, EnergyTransformer):
        # Train the raw energy: drop the init's calibrated temperatures (recalibrate afterwards).
        model.config.length_scales, model.config.energy_scale = None, 1.0
    return model


class _StopSignals:
    """Ctrl-C / SIGTERM during training: the first asks the loop to stop after the current step
    (it then saves and exits 130 / 143); a second aborts at once (KeyboardInterrupt; every file is
    written atomically, so the last good checkpoint survives)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers live on the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _train(args: argparse.Namespace, preset, steps: int, tcfg, info: DistInfo, device: torch.device,
           out: Path) -> int:
    from tqdm import tqdm

    _set_threads(args.threads)
    model = None
    resumed = False
    init_training = None
    if args.resume and out.exists():
        model = _load_resume_target(out, args, preset, tcfg)
        resumed = True
    elif args.init:
        model = _load_init(args, preset)
        init_training = model.card.get("training")  # the init's own recipe, kept for reproducibility
    if args.resume and not resumed and info.is_main:
        print(f"--resume: no checkpoint at {out} yet; starting at step 0", file=sys.stderr)
    if isinstance(preset.model, MixtureConfig):  # exact NLL, one process (checked above), any device
        trainer: Trainer = MixtureTrainer(model=model, config=tcfg, model_config=preset.model, device=device,
                                          amp=args.amp)
    else:
        # energy models: CD for densities, RegressionTrainer for the regression families
        trainer = make_trainer(model=model, config=tcfg, model_config=preset.model, device=device, dist=info,
                               amp=args.amp)
        if args.compile:
            compile_model(trainer.model)
    prior_seconds = 0.0
    commands: list[str] = []
    if resumed:
        previous = model.card.get("training", {})  # type: ignore[union-attr]
        commands = list(previous.get("commands") or [previous.get("command", "")])
        rp = _resume_path(out)
        if rp.exists():
            load_train_state(trainer, rp, model.card)  # type: ignore[union-attr]
        else:
            trainer.step_count = int(previous.get("steps", 0))
        prior_seconds = float(previous.get("seconds", 0.0))
        if trainer.step_count >= steps:
            if info.is_main:
                print(f"{out} is at step {trainer.step_count} already (--steps {steps}): nothing to train, "
                      "nothing written")
            return 0
        if info.is_main:
            print(f"resuming {out} at step {trainer.step_count}", file=sys.stderr)
    barrier(info)  # every rank has read the files before rank 0 may overwrite them
    command = _launch_command(sys.argv[1:] if args.argv is None else args.argv, info)
    commands.append(command)
    t_start = time.time()
    deadline = t_start + 60 * args.minutes if args.minutes is not None else None

    def card() -> dict:
        c = {
            "name": out.stem,
            "task": trainer.prior.to_card(),
            **pool_entries(trainer.pool),
            "box": list(preset.box),
            "sampler": preset.sampler.to_dict(),
            "training": {
                "preset": args.preset, "command": command, "commands": commands,
                **({"init": str(args.init), "init_training": init_training} if args.init else {}),
                "steps": trainer.step_count,
                "seconds": round(prior_seconds + time.time() - t_start, 1),
                "device": describe(device), "world_size": info.world_size,
                "amp": bool(args.amp), "compile": bool(args.compile),
                "config": tcfg.to_dict(), "events": trainer.events[-20:],
            },
        }
        if preset.thinking is not None:
            previous_thinking = (model.card or {}).get("thinking") if resumed else None  # type: ignore[union-attr]
            c["thinking"] = previous_thinking or preset.thinking.to_dict()
        return c

    def checkpoint() -> None:
        if info.is_main:  # rank 0 alone writes: the checkpoint (one atomic file), then its resume state
            save_checkpoint(trainer.model, out, card())
            save_train_state(trainer, _resume_path(out), trainer.model.card)

    first_step = trainer.step_count
    quiet = args.quiet or not info.is_main
    bar = tqdm(total=steps, initial=trainer.step_count, disable=quiet, desc=f"train {args.preset}")
    last_save = time.time()
    with _StopSignals() as stop:
        while trainer.step_count < steps:
            m = trainer.step()
            bar.update(0 if m["skipped"] else 1)
            bar.set_postfix({k: f"{m[k]:.3f}" for k in ("loss", "e_real", "e_neg", "nll_last") if k in m})
            if args.log_every and info.is_main and trainer.step_count % args.log_every == 0:
                print(json.dumps({k: v for k, v in m.items() if k != "event"}), file=sys.stderr, flush=True)
            if time.time() - last_save > args.save_every:
                checkpoint()
                last_save = time.time()
            # Ranks must stop at the same step (each step all-reduces): rank clocks and signals are OR-ed.
            late = deadline is not None and time.time() > deadline
            if any_true(late or stop.signum is not None, info, device):
                if info.is_main and stop.signum is None:
                    print(f"time limit reached at step {trainer.step_count}", file=sys.stderr)
                break
        bar.close()
        trained = trainer.step_count > first_step
        if trained:
            checkpoint()
        barrier(info)
    if stop.signum is not None:
        if info.is_main:
            what = (f"saved {out} and its resume state at step {trainer.step_count} (continue with --resume)"
                    if trained else "no step finished, nothing written")
            print(f"interrupted ({signal.Signals(stop.signum).name}): {what}", file=sys.stderr)
        return 128 + stop.signum
    if info.is_main:
        print(f"saved {out} ({trainer.step_count} steps, {info.world_size} process(es) on {device.type})")
    return 0


def _pool_learners(model) -> tuple[list, object]:
    """([the pool's Bayes learner], pool) for a model trained on a finite task pool; ([], None) else."""
    from iclebm.card import pool_of
    from iclebm.evaluation.pool_bayes import PoolBayes

    pool = pool_of(model)
    return ([PoolBayes(pool)] if pool is not None else []), pool


def _pool_heading(pool, source: str) -> str:
    """A pool model's tables say which tasks they are on ('' for a model of the full prior)."""
    if pool is None:
        return ""
    return (f"Trained on a pool of M = {pool.size} tasks (pool seed {pool.seed}); held-out tasks from "
            f"{source}; bayes_pool is the pool's Bayes predictive:\n")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from iclebm.evaluation.density import format_nll_table, in_context_nll

    _check_json_out(args.json)
    if args.update_card:  # the file whose card is rewritten: its own target, never a shipped one
        args.checkpoint = str(_check_output(Path(args.checkpoint or DEFAULT_CHECKPOINT), "--update-card: "
                                            "the checkpoint", force=args.force, own=True))
    device = resolve_device(args.device)
    model = load_checkpoint(args.checkpoint).to(device)
    if is_regression(model.card.get("task")):
        return _evaluate_regression(model, args)
    _set_threads(args.threads)
    extra, pool = _pool_learners(model)
    table = in_context_nll(model, n_tasks=args.tasks, seed=args.seed, resolution=args.resolution,
                           orders=args.orders, extra=extra)
    print(_pool_heading(pool, "the prior") + format_nll_table(table))
    if pool is not None:  # the same table on the pool's own tasks: memorised or not
        table["pool_tasks"] = in_context_nll(model, n_tasks=args.tasks, seed=args.seed,
                                             resolution=args.resolution, extra=extra, draws=pool)
        print("\n" + _pool_heading(pool, "the pool") + format_nll_table(table["pool_tasks"]))
    if args.bayes_checks:
        table["bayes_checks"] = _print_bayes_checks(model, args.seed)
    if args.json:
        _write_json(args.json, table)
    if args.update_card:
        model.card["evaluation"] = table
        save_checkpoint(model, Path(args.checkpoint), model.card)
        print(f"updated the card of {args.checkpoint}")
    return 0


def _print_bayes_checks(model: EnergyTransformer, seed: int, name: str = "", quick: bool = False) -> dict:
    """Permutation KL and martingale gap vs n of a density model, Bayes and the KDE (--bayes-checks)."""
    from iclebm.evaluation.bayesian_table import bayesian_checks, format_bayesian_checks

    t0 = time.time()
    small = {"n_tasks": 1, "ns": (0, 2), "continuations": 8, "steps": 2} if quick else {}
    result = bayesian_checks(model, seed=seed, **small)
    result["seconds"] = round(time.time() - t0, 1)
    print(f"\nIs it Bayesian?{' ' + name if name else ''} ({result['seconds']} s)")
    print(format_bayesian_checks(result))
    return result


def _evaluate_regression(model: EnergyTransformer, args: argparse.Namespace) -> int:
    """Regression checkpoint: (optionally tune the thinking step size,) NLL/MSE tables, thinking curve."""

    from iclebm.evaluation.regression import (
        format_regression_tables,
        regression_table,
        thinking_curve,
        tune_thinking,
    )
    _set_threads(args.threads)
    command = "python -m iclebm " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    if args.tune_thinking:
        thinking, rows = tune_thinking(model)
        for r in rows:
            print("thinking candidate", r, flush=True)
        model.card["thinking"] = thinking
        model.card["thinking_tuning"] = {"rows": rows, "command": command}
        print("thinking defaults", thinking, flush=True)
    t0 = time.time()
    extra, pool = _pool_learners(model)
    table = regression_table(model, n_tasks=args.tasks, seed=args.seed, resolution=min(args.resolution, 400),
                             extra=extra)
    curve = thinking_curve(model, n_tasks=args.tasks, seed=args.seed)
    print(_pool_heading(pool, "the prior") + format_regression_tables(table, curve))
    if pool is not None:  # the same table on the pool's own tasks: memorised or not
        table["pool_tasks"] = regression_table(model, n_tasks=args.tasks, seed=args.seed,
                                               resolution=min(args.resolution, 400), extra=extra, draws=pool)
        print("\n" + _pool_heading(pool, "the pool") + format_regression_tables(table["pool_tasks"]))
    table["command"] = command
    table["seconds"] = round(time.time() - t0, 1)
    if args.json:
        _write_json(args.json, {"evaluation": table, "thinking_curve": curve})
    if args.update_card:
        model.card["evaluation"] = table
        model.card["thinking_curve"] = curve
        save_checkpoint(model, Path(args.checkpoint), model.card)
        print(f"updated the card of {args.checkpoint}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit per-length temperatures, pick the default sampler, evaluate, write the checkpoint."""

    from iclebm.evaluation.calibration import DEFAULT_SAMPLER_CANDIDATES, choose_sampler, fit_length_scales
    from iclebm.evaluation.density import format_nll_table, guidance_fraction, in_context_nll

    out = _check_output(Path(args.out), "--out", force=args.force)
    _set_threads(args.threads)
    device = resolve_device(args.device)
    model = _load_density_model(args.checkpoint, "calibrate").to(device)
    card = dict(model.card)
    command = "python -m iclebm " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    t0 = time.time()
    if not args.no_length_scales:
        scales, report = fit_length_scales(model, n_tasks=args.tasks, resolution=args.resolution)
        model.config.length_scales = scales
        card["calibration"] = report
        print("length scales", dict(zip(report["knots"], scales, strict=True)), flush=True)
    sampler, rows = choose_sampler(model, DEFAULT_SAMPLER_CANDIDATES, n_tasks=args.guidance_tasks)
    for r in rows:
        print("sampler candidate", r, flush=True)
    card["sampler"] = sampler.to_dict()
    model.card = card
    frac = guidance_fraction(model, n_tasks=args.eval_tasks // 4, n_particles=1000, seed=args.seed + 1)
    card["guidance"] = {"fraction_within_1.5_of_a_true_mean": round(frac, 4), "context_len": 32,
                        "n_particles": 1000, "n_tasks": args.eval_tasks // 4, "init": "uniform over the box"}
    print(f"guidance: {frac:.3f} of particles end within 1.5 of a true mean", flush=True)
    table = in_context_nll(model, n_tasks=args.eval_tasks, seed=args.seed, resolution=args.eval_resolution)
    card["evaluation"] = table
    print(format_nll_table(table))
    card.setdefault("training", {})
    card["training"]["calibrate_command"] = command
    card["training"]["calibrate_seconds"] = round(time.time() - t0, 1)
    save_checkpoint(model, out, card)
    print(f"saved {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from iclebm.bench import run_bench
    from iclebm.evaluation.icl_curve import run_training_curves

    if args.task_diversity:
        return _task_diversity(args)
    if args.training_curve:
        _set_threads(args.threads)
        run_training_curves((args.presets or "small,fast").split(","), args.objectives.split(","),
                            args.seconds, args.eval_every, quick=args.quick)
        return 0
    if args.checkpoint is not None:
        _load_density_model(args.checkpoint, "bench")  # a clear refusal before the benchmark starts
    run_bench(checkpoint=args.checkpoint, quick=args.quick, repeats=args.repeats,
              device=resolve_device(args.device), compile_=args.compile, throughput_only=args.throughput_only)
    return 0


def _pools_arg(text: str) -> list[int]:
    """--pools: comma-separated pool sizes, 'inf' (or 0) for the full prior."""
    parse = int_in(0, MAX_TASK_POOL)
    return [0 if p.strip() in ("inf", "0") else parse(p.strip()) for p in text.split(",") if p.strip()]


def _task_diversity(args: argparse.Namespace) -> int:
    """Train each preset on pools of M tasks for a fixed budget; table, JSON and figure (README)."""
    from iclebm.evaluation.task_diversity import DIVERSITY_PRESETS, format_diversity_table, run_task_diversity
    from iclebm.render.diversity import diversity_figure

    _set_threads(args.threads or 1)
    presets = args.presets.split(",") if args.presets else list(DIVERSITY_PRESETS)
    for name in presets:
        get_preset(name)
    out = Path(args.diversity_out)
    _check_writable(out.with_suffix(".json"), "--diversity-out")
    rows = run_task_diversity(presets, args.pools, args.seconds, out=out.with_suffix(".json"), lock=args.lock,
                              n_tasks=4 if args.quick else 32, n_test=20 if args.quick else 100)
    print(format_diversity_table(rows))
    note = (f"{args.seconds:g} s of training per run, {torch.get_num_threads()} torch thread(s), "
            f"{describe(torch.device('cpu'))}")
    fig = diversity_figure(rows, presets, note)
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Per-layer, per-head attention of one query over a context, and leave-one-out influence."""

    from iclebm.probes.inspector import (
        check_in_box,
        format_attention_tables,
        format_influence_table,
        inspect_query,
        parse_points,
        parse_query,
    )
    points = parse_points(args.points)
    query = parse_query(args.query)
    model = load_checkpoint(args.checkpoint)
    if not isinstance(model, EnergyTransformer):
        raise ValueError(f"{type(model).__name__} has no query tokens to inspect; "
                         "inspect reads the attention of an energy model")
    box = box_of(model)
    check_in_box(query, box)
    if len(points) > model.config.max_context:
        raise ValueError(f"{len(points)} points given; this model reads at most {model.config.max_context}")
    insp = inspect_query(model, points, query)
    print(f"query ({query[0]:g}, {query[1]:g}), {insp.n_points} context points"
          + (" (empty context: the query can only attend to itself)" if insp.n_points == 0 else ""))
    print()
    print(format_attention_tables(insp))
    print(format_influence_table(insp))
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    """The model on a real example data set beside the baselines (resampled contexts; see
    iclebm.evaluation.examples). Default model: the app's default for iris, linreg for diabetes."""
    from iclebm.data.examples import EXAMPLES
    from iclebm.evaluation.examples import example_markdown, example_table

    if args.threads:
        torch.set_num_threads(args.threads)
    default = app_default_checkpoint() if EXAMPLES[args.example].kind == "density" else (
        CHECKPOINT_DIR / "linreg.safetensors")
    model = load_checkpoint(args.checkpoint or default)
    table = example_table(model, args.example, splits=args.splits, seed=args.seed)
    name = (model.card or {}).get("name", "model")
    print(f"{name} on {args.example}: {table['source']}")
    print(f"{table['splits']} random splits; context = the first n points, test = the last "
          f"{table['n_test']}; mean ± standard error over splits, in the box's coordinates\n")
    print("NLL (nats/point, lower is better)\n" + example_markdown(table, "nll"))
    if "mse" in table:
        print("\nMSE of the point prediction (ols/ridge/knn NLL is plug-in N(ŷ, prior noise²))\n"
              + example_markdown(table, "mse"))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """A figure or GIF of a model on points from a file (strict: any bad row refuses the whole file) or
    an example data set. Everything is checked before the model runs; nothing is written on an error."""
    from iclebm.data.examples import load_example
    from iclebm.data.points import read_points
    from iclebm.data.rescale import choose_subset, fit_into_box, outside_box
    from iclebm.render.figures import check_render_request, render_figure

    out = Path(args.out)
    _check_writable(out, "--out")
    model = load_checkpoint(args.checkpoint or app_default_checkpoint())
    check_render_request(model, args.what, out)
    box, cap = box_of(model), model.config.max_context
    mapping, title = None, None
    if args.example:
        ex = load_example(args.example, box)
        points, mapping, labels = ex.points, ex.mapping, ex.example.columns
        title = f"{model.card.get('name', 'model')} on {args.example} (via scikit-learn): {args.what}"
        print(f"{args.example}: {ex.example.source}; standardised: {mapping.describe()}", file=sys.stderr)
    else:
        columns = tuple(args.columns.split(",", 1)) if args.columns else None
        table = read_points(Path(args.points), columns, strict=True)  # type: ignore[arg-type]
        points, labels = table.points, table.columns
        if args.rescale:
            mapping = fit_into_box(points, box)
            points = mapping.to_box(points)
            print(f"rescaled into the box [{box[0]:g}, {box[1]:g}]²: {mapping.describe()}", file=sys.stderr)
        elif (n_out := int(outside_box(points, box).sum())):
            raise ValueError(f"{n_out} of {len(points)} points lie outside the model's box "
                             f"[{box[0]:g}, {box[1]:g}]²; pass --rescale to map the data into it")
    idx, note = choose_subset(len(points), cap, args.subset, args.seed)
    if note:
        print(note, file=sys.stderr)
    render_figure(model, points[idx], out, args.what, args.resolution, mapping, labels, title)
    print(f"wrote {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """NLL vs n of several checkpoints, Bayes and baselines, on the training prior and out-of-family data."""

    from iclebm.evaluation.compare import QUICK, compare, format_compare

    paths = args.checkpoints or [p for p in ("checkpoints/mog2d.safetensors", "checkpoints/mdn2d.safetensors")
                                 if Path(p).exists()]
    if not paths:
        raise ValueError("no checkpoints given and none shipped under checkpoints/")
    _check_json_out(args.json)
    _set_threads(args.threads)
    device = resolve_device(args.device)
    loaded = [(Path(p), load_checkpoint(p).to(device)) for p in paths]
    for path, m in loaded:
        prior_of(m, DENSITY, f"compare ({path.name})")  # either architecture, but densities only
    models = {path.stem: m for path, m in loaded}
    if len(models) != len(paths):
        raise ValueError("two checkpoints share a file name; rename one")
    first = next(iter(models.values()))
    prior = prior_of(first, DENSITY, "compare")
    settings = (dict(QUICK) if args.quick
                else {"n_tasks": args.tasks, "n_test": args.test, "resolution": args.resolution})
    t0 = time.time()

    def progress(family: str) -> None:
        print(f"[{time.time() - t0:6.0f} s] {family}", file=sys.stderr, flush=True)

    result = compare(models, prior, box_of(first), seed=args.seed, only=args.families, progress=progress,
                     **settings)
    result["command"] = "python -m iclebm " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    result["seconds"] = round(time.time() - t0, 1)
    print(format_compare(result))
    if args.bayes_checks:
        result["bayes_checks"] = {name: _print_bayes_checks(m, args.seed, name, args.quick)
                                  for name, m in models.items()}
    if args.json:
        _write_json(args.json, result)
    return 0


def cmd_ctx2weights(args: argparse.Namespace) -> int:
    """In context vs in weights on one drawn task: distances and NLLs at each snapshot k."""

    from iclebm.probes.ctx2weights import FineTuneConfig, distances, fine_tune, in_context_reference

    _set_threads(args.threads)
    model = _load_density_model(args.checkpoint, "ctx2weights", energy_only=False)
    if not 1 <= args.points <= model.config.max_context:
        raise ValueError(f"--points must lie in [1, {model.config.max_context}]")
    if args.short > args.points:
        raise ValueError(f"--short {args.short} exceeds --points {args.points}")
    cfg = FineTuneConfig(steps=args.steps, lr=args.lr, objective=args.objective, seed=args.seed)
    box = box_of(model)
    prior = prior_of(model, DENSITY, "ctx2weights")
    g = torch.Generator().manual_seed(args.seed)
    task = prior.sample_task(g)
    pts, held = task.sample(args.points, g).numpy(), task.sample(args.heldout, g)
    oracle = float(-task.log_prob(held.double()).mean())
    held = held.numpy()
    ref = in_context_reference(model, pts, box, args.resolution, held)
    res = fine_tune(model, pts, cfg, box, short_context=pts[: args.short], heldout=held,
                    display_resolution=args.resolution)
    d = distances(ref, res.snapshots)
    print(f"task seed {args.seed}: {args.points} context points, {args.heldout} held-out points; "
          f"{args.objective}, lr {args.lr:g}, fine-tuned model reads {args.short} points; "
          f"grid {args.resolution}x{args.resolution}")
    print(f"in context: NLL(D) {ref.nll_context:.3f}, held-out NLL {ref.nll_heldout:.3f}; "
          f"true mixture held-out NLL {oracle:.3f}")
    print(f"{'k':>5} {'loss':>8} {'NLL(D)':>8} {'held-out':>9} {'sym KL':>8} {'Hellinger':>9}")
    for s, kl, h in zip(res.snapshots, d["sym_kl"], d["hellinger"], strict=True):
        print(f"{s.step:>5} {s.loss:8.3f} {s.nll_context:8.3f} {s.nll_heldout:9.3f} {kl:8.3f} {h:9.3f}")
    print(f"{res.status} in {res.seconds:.1f} s" + (f": {res.message}" if res.message else ""))
    return 0 if res.status == "done" else 1


def cmd_check_device(args: argparse.Namespace) -> int:
    """Every preset through every path on one device: a pass/fail table, exit 1 on any failure."""

    from iclebm.diagnostics.check import run_check_command

    if args.threads:
        torch.set_num_threads(args.threads)
    # --debug (every subcommand has it) also prints each failed path's traceback
    debug = bool(getattr(args, "debug", False))
    return run_check_command(args.device, args.amp, args.presets, debug, args.quiet)


def add_check_device_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("check-device", help="every preset through every path on one device: pass/fail table")
    d.add_argument("--device", default="cpu", help="cpu|cuda|cuda:N (default cpu: small models)")
    d.add_argument("--amp", action="store_true", help="under bf16 autocast (CUDA only)")
    d.add_argument("--presets", nargs="+", default=None, help="only these presets (default: all)")
    d.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    d.add_argument("--threads", type=int_in(1, 1024), default=None, help="torch CPU threads")
    d.set_defaults(func=cmd_check_device)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m iclebm", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model: CD for energy presets, exact NLL for mdn2d")
    t.add_argument("--preset", choices=sorted(PRESETS), default="small")
    t.add_argument("--steps", type=int_in(1, MAX_STEPS), default=None,
                   help="total optimiser steps (default: the preset's)")
    t.add_argument("--minutes", type=float_in(0), default=None,
                   help="stop (and save) after this many minutes")
    t.add_argument("--out", default=None, help="checkpoint path (default runs/PRESET.safetensors)")
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    t.add_argument("--force", action="store_true",
                   help="overwrite an existing checkpoint, or write into checkpoints/ (releasing a model)")
    t.add_argument("--init", default=None, help="start from this checkpoint's weights (fine-tuning)")
    t.add_argument("--device", default="cpu", help=f"{'|'.join(DEVICE_CHOICES)} or cuda:N (default cpu; "
                   "auto picks CUDA when present; under torchrun each rank takes cuda:LOCAL_RANK)")
    t.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    t.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    t.add_argument("--dist-timeout", type=float_in(0, 86_400), default=300.0,
                   help="seconds to wait for the other processes of a torchrun launch")
    t.add_argument("--seed", type=SEED, default=0)
    t.add_argument("--lr", type=float_in(0, 10.0), default=None)
    t.add_argument("--objective", type=_objective_arg, choices=list(OBJECTIVES), default=None,
                   help=_objectives_help("default: the preset's"))
    t.add_argument("--batch-size", type=int_in(1, MAX_BATCH), default=None,
                   help="tasks per step (default: the preset's)")
    t.add_argument("--grid-resolution", type=int_in(2, MAX_RESOLUTION), default=None,
                   help="exact objective: cells per axis of the jittered grid")
    t.add_argument("--exact-positions", type=int_in(0, 65_536), default=None,
                   help="exact objective: random positions per step (0: all)")
    t.add_argument("--short-bias", type=float_in(0, 8, lo_open=False), default=None,
                   help="exact objective with --exact-positions: draw position n with probability "
                        "~ (n + 1)^-BIAS (0: uniform; 1 oversamples short prefixes)")
    t.add_argument("--kernel-points", type=int_in(0, 65_536), default=None,
                   help="exact objective: importance points per position around the context (0: grid only)")
    t.add_argument("--task-pool", type=int_in(0, MAX_TASK_POOL), default=None, metavar="M",
                   help=f"train on a finite pool of M tasks drawn once from the prior (0: the full prior; "
                        f"at most {MAX_TASK_POOL}); the card stores the pool's tasks")
    t.add_argument("--pool-seed", type=SEED, default=None, help="seed of the task pool's draw (default 0)")
    t.add_argument("--threads", type=THREADS, default=None, help="torch CPU threads")
    t.add_argument("--save-every", type=float_in(0), default=120.0, help="seconds between checkpoints")
    t.add_argument("--log-every", type=int_in(0), default=0, help="print metrics as JSON every N steps")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train, argv=None)

    e = sub.add_parser("evaluate", help="in-context NLL table of a checkpoint")
    e.add_argument("--checkpoint", default=None, help="default: the shipped model")
    e.add_argument("--tasks", type=TASKS, default=64, help="held-out tasks")
    e.add_argument("--seed", type=SEED, default=12345)
    e.add_argument("--resolution", type=RESOLUTION, default=200,
                   help=f"grid cells per axis for Z ({MIN_RESOLUTION}-{MAX_RESOLUTION})")
    e.add_argument("--json", default=None, help="write the table as JSON here")
    e.add_argument("--update-card", action="store_true", help="store the table in the checkpoint's card")
    e.add_argument("--force", action="store_true", help="allow --update-card on a shipped model")
    e.add_argument("--tune-thinking", action="store_true",
                   help="regression: choose the default thinking step size and starts on validation tasks")
    e.add_argument("--threads", type=THREADS, default=None, help="torch CPU threads")
    e.add_argument("--device", default="cpu", help="cpu|auto|cuda|cuda:N|mps (default cpu)")
    e.add_argument("--orders", type=int_in(1, 64), default=1,
                   help="density: add the column model_orders, the order ensemble over this many orderings")
    e.add_argument("--bayes-checks", action="store_true",
                   help="density: print permutation KL and martingale gap vs n beside Bayes (minutes)")
    e.set_defaults(func=cmd_evaluate, argv=None)

    c = sub.add_parser("calibrate", help="fit per-length temperatures, choose the sampler, evaluate, save")
    c.add_argument("--checkpoint", required=True, help="an uncalibrated trained checkpoint")
    c.add_argument("--out", required=True, help="where to write the calibrated checkpoint")
    c.add_argument("--force", action="store_true",
                   help="overwrite an existing --out, or write into checkpoints/")
    c.add_argument("--tasks", type=TASKS, default=32, help="validation tasks for the temperature fit")
    c.add_argument("--resolution", type=RESOLUTION, default=120, help="grid cells per axis for the fit")
    c.add_argument("--guidance-tasks", type=TASKS, default=8, help="validation tasks per sampler candidate")
    c.add_argument("--eval-tasks", type=int_in(4, MAX_TASKS), default=64,
                   help="held-out evaluation tasks (a quarter of them, at least 1, for guidance)")
    c.add_argument("--eval-resolution", type=RESOLUTION, default=200)
    c.add_argument("--seed", type=SEED, default=12345, help="evaluation seed (validation uses others)")
    c.add_argument("--no-length-scales", action="store_true", help="skip the temperature fit")
    c.add_argument("--threads", type=THREADS, default=None)
    c.add_argument("--device", default="cpu", help="cpu|auto|cuda|cuda:N|mps (default cpu)")
    c.set_defaults(func=cmd_calibrate, argv=None)

    b = sub.add_parser("bench", help="speed benchmark: cached vs naive, vectorised vs loops")
    b.add_argument("--checkpoint", default=None)
    b.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    b.add_argument("--repeats", type=int_in(1, 1000), default=5)
    b.add_argument("--training-curve", action="store_true",
                   help="instead: NLL at n = 32 vs training seconds, from scratch, per preset and objective")
    b.add_argument("--presets", default=None, help="training curve: comma-separated presets (default "
                   "small,fast; --task-diversity: fast,linreg)")
    b.add_argument("--task-diversity", action="store_true",
                   help="instead: train on task pools of M tasks (--pools) for --seconds each; NLL at n = 16 "
                        "vs the pool's and the prior's Bayes predictive (table, JSON, figure)")
    b.add_argument("--pools", type=_pools_arg, default=[1, 4, 16, 64, 256, 1024, 0],
                   help="task diversity: comma-separated pool sizes, inf for the full prior")
    b.add_argument("--diversity-out", default="docs/task_diversity",
                   help="task diversity: writes PATH.json (rows; an interrupted grid resumes) and PATH.png")
    b.add_argument("--lock", default=None,
                   help="task diversity: hold an exclusive flock on this file during each run")
    b.add_argument("--objectives", default="cd,exact", help="training curve: comma-separated objectives")
    b.add_argument("--seconds", type=float_in(0, 86_400), default=60.0,
                   help="training curve and task diversity: training seconds per run")
    b.add_argument("--eval-every", type=float_in(0, 86_400), default=15.0,
                   help="training curve: seconds between evals")
    b.add_argument("--threads", type=THREADS, default=None, help="torch CPU threads")
    b.add_argument("--device", default="cpu", help="cpu|auto|cuda|cuda:N|mps: where the model runs; "
                   "with CUDA the CD-step and heatmap rows are also timed on the CPU beside it")
    b.add_argument("--compile", action="store_true", help="also time the CD step with torch.compile")
    b.add_argument("--throughput-only", action="store_true", help="only the per-device throughput table")
    b.set_defaults(func=cmd_bench)

    cp = sub.add_parser("compare", help="NLL vs n: models, Bayes, KDE, EM, oracle, in and out of family")
    cp.add_argument("--checkpoints", nargs="+", default=None,
                    help="any number of checkpoints (default: the shipped mog2d and mdn2d that exist)")
    cp.add_argument("--families", nargs="+", default=None,
                    help="subset of: 'training prior', '5 components', anisotropic, 'two moons', rings, "
                    "'swiss roll'")
    cp.add_argument("--tasks", type=TASKS, default=32, help="tasks per family")
    cp.add_argument("--test", type=int_in(1, 100_000), default=200, help="held-out points per task")
    cp.add_argument("--resolution", type=RESOLUTION, default=200, help="grid cells per axis for Z")
    cp.add_argument("--seed", type=SEED, default=2024)
    cp.add_argument("--quick", action="store_true", help="tiny setting (2 tasks, n = 0, 2, 8): a smoke test")
    cp.add_argument("--json", default=None, help="write the tables as JSON here")
    cp.add_argument("--threads", type=THREADS, default=None)
    cp.add_argument("--device", default="cpu", help="cpu|auto|cuda|cuda:N|mps (default cpu)")
    cp.add_argument("--bayes-checks", action="store_true",
                    help="also print each model's permutation KL and martingale gap vs n beside Bayes")
    cp.set_defaults(func=cmd_compare, argv=None)

    i = sub.add_parser("inspect", help="attention of a query over a context, per layer and head; influence")
    i.add_argument("--checkpoint", default=None, help="default: the shipped model")
    i.add_argument("--points", required=True, help='context points "x,y;x,y;..." ("" = empty context)')
    i.add_argument("--query", required=True, help="query location x,y (inside the model's box)")
    i.set_defaults(func=cmd_inspect)

    e = sub.add_parser("examples", help="a model on a real data set (iris, diabetes) beside the baselines")
    e.add_argument("--example", choices=["iris", "diabetes"], required=True)
    e.add_argument("--checkpoint", default=None,
                   help="default: the app's default model (iris) or checkpoints/linreg (diabetes)")
    e.add_argument("--splits", type=int_in(2, 1000), default=20, help="random context/test splits")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int_in(1, 256), default=None, help="torch CPU threads")
    e.set_defaults(func=cmd_examples)

    r = sub.add_parser("render", help="a figure (.png/.svg/.pdf) or animation (.gif) of a model on points")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--points", help="a CSV/TSV/whitespace table (header optional); any bad row: exit 2")
    src.add_argument("--example", choices=["iris", "diabetes"], help="a real data set scikit-learn ships")
    r.add_argument("--out", required=True, help="the file to write; its suffix: .png, .svg, .pdf or .gif")
    r.add_argument("--checkpoint", default=None, help="default: the app's default model")
    r.add_argument("--what", choices=["landscape", "density", "filmstrip", "langevin", "thinking"],
                   default="density", help="E, log p, log p after 0, 1, 2, 4... points, Langevin, or a "
                   "regression model's y_hat(x) per thinking step (.gif: the last 3)")
    r.add_argument("--resolution", type=int_in(8, 400), default=100, help="grid cells per axis (8-400)")
    r.add_argument("--columns", default=None, help="two columns of a wider table: names or 0-based indices, "
                   "e.g. 'petal length,petal width' or 2,3 (default: the first two)")
    r.add_argument("--rescale", action="store_true",
                   help="map the data into the model's box (power-of-two scale; ticks keep the data's units)")
    r.add_argument("--subset", choices=["first", "last", "random"], default="random",
                   help="which points to keep beyond the model's 64 (default random)")
    r.add_argument("--seed", type=SEED, default=0, help="seed of a random subset")
    r.set_defaults(func=cmd_render)

    w = sub.add_parser("ctx2weights", help="in-context density vs fine-tuning the weights on the context")
    w.add_argument("--checkpoint", default=None, help="default: the shipped model")
    w.add_argument("--seed", type=SEED, default=1, help="which task to draw from the model's prior")
    w.add_argument("--points", type=int_in(1), default=32, help="context size N")
    w.add_argument("--heldout", type=int_in(1, 100_000), default=500, help="held-out points of the same task")
    w.add_argument("--steps", type=int_in(1, 100_000), default=100, help="fine-tuning steps k")
    w.add_argument("--lr", type=float_in(0, 10.0), default=1e-3)
    w.add_argument("--objective", type=_objective_arg, choices=list(OBJECTIVES), default="exact",
                   help=_objectives_help("default: exact"))
    w.add_argument("--short", type=int_in(0), default=0, help="the fine-tuned model reads the first S points")
    w.add_argument("--resolution", type=int_in(8, MAX_RESOLUTION), default=60,
                   help="grid for densities and distances (8-1000)")
    w.add_argument("--threads", type=THREADS, default=None)
    w.set_defaults(func=cmd_ctx2weights)
    add_check_device_parser(sub)
    return p


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _quiet_stdout() -> None:
    """After a closed pipe (`... | head`): point stdout at /dev/null so the interpreter's final flush
    does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a refused flag (2, one line already printed)
        return e.code if isinstance(e.code, int) else 2
    if argv is not None and getattr(args, "argv", "absent") is None:
        args.argv = argv
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args))
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other tools do
        _quiet_stdout()
        return 141
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except (IclebmError, ValueError, OSError) as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if debug:
            raise
        print(f"error: unexpected {type(e).__name__}: {_one_line(e)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
