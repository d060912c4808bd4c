"""The property tables of the four pages (see `iclebm.ui.page_state`): every choice that changes
what a page shows, with its default, bounds and key in the share link. A page's widgets take their
keys and bounds from here; `iclebm.ui.share` restores and publishes them.

Bounds marked "bound per run" depend on the model and are set with `Table.bind` by the page.
"""

from __future__ import annotations

from iclebm.objectives import OBJECTIVES, resolve_objective
from iclebm.probes.ctx2weights import BOUNDS as C2W_BOUNDS
from iclebm.tasks import REGRESSION_FAMILIES
from iclebm.ui.jobs.live_settings import BOUNDS as TRAIN_BOUNDS
from iclebm.ui.jobs.live_settings import FAST_DEFAULTS
from iclebm.ui.page_state import MEAN, Prop, Table

OBJECTIVE_NAMES = tuple(OBJECTIVES)
SEED_MAX = 10**6

# ---- Density -------------------------------------------------------------------------------------

VIEWS = ("energy", "density")
RESOLUTIONS = (60, 80, 100, 140, 200)
FEED_MODES = ("all at once", "one at a time")
# The context and the mixture it was drawn from are shared by Density and Inside (same names).
POINTS = Prop("points", "pts", "points", [])  # box and cap bound per run
MIXTURE = Prop("mixture", "mix", "mixture", None)

DENSITY = Table("density", (
    POINTS,
    Prop("view", "view", "choice", "energy", choices=VIEWS),
    Prop("resolution", "grid", "choice", 100, choices=RESOLUTIONS),
    Prop("show_bayes", "bayes", "bool", False),
    Prop("log_scale", "log", "bool", False),
    Prop("contours", "contours", "bool", True),
    Prop("arrows", "arrows", "bool", True),
    Prop("show_true", "true", "bool", True),
    Prop("n_shown", "n", "int", None, lo=0),  # the scrubbed prefix; None = all points (cap bound per run)
    MIXTURE,
    # the random-mixture panel; its defaults are the model's training prior (bound per run)
    Prop("mix_from_prior", "mixprior", "bool", True),
    Prop("mix_k", "mixk", "int_range", (3, 3), lo=1, hi=8),
    Prop("mix_spread", "mixspread", "float", 3.0, lo=0.5, hi=6.0),
    Prop("mix_width", "mixwidth", "float_range", (0.33, 0.5), lo=0.1, hi=2.0),
    Prop("mix_ratio", "mixratio", "float_range", (1.0, 1.0), lo=1.0, hi=6.0),
    Prop("mix_seed", "seed", "int", 0, lo=0, hi=SEED_MAX),
    Prop("mix_n", "mixn", "int", 32, lo=1),  # cap bound per run
    Prop("mix_mode", "feed", "choice", FEED_MODES[0], choices=FEED_MODES),
))
# The mixture panel's inputs, in the order of their sliders, and the mixture setting each one sets.
MIX_INPUTS = {"mix_k": "k", "mix_spread": "spread", "mix_width": "width", "mix_ratio": "ratio"}

# ---- Inside --------------------------------------------------------------------------------------

MODES = ("query", "attention", "influence")
LR_CHOICES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)

INSIDE = Table("inside", (
    POINTS,
    MIXTURE,
    Prop("in_query", "q", "point", None),  # box bound per run; None = the context's centre
    Prop("in_mode", "mode", "choice", "query", choices=MODES),
    Prop("in_layer", "layer", "index", MEAN),  # 1..n_layer bound per run
    Prop("in_head", "head", "index", MEAN),
    Prop("in_obj", "obj", "choice", "exact", choices=OBJECTIVE_NAMES, canon=resolve_objective),
    Prop("in_k", "k", "int", 100, lo=C2W_BOUNDS["steps"][0], hi=C2W_BOUNDS["steps"][1]),
    Prop("in_lr", "lr", "choice", 1e-3, choices=LR_CHOICES),
    Prop("in_short", "short", "int", 0, lo=C2W_BOUNDS["short"][0], hi=C2W_BOUNDS["short"][1]),
))

# ---- Regression ----------------------------------------------------------------------------------

REG_VIEWS = ("density", "energy")
REG_FEED_MODES = ("all at once", "point by point")
MAX_STEPS = 100

REGRESSION = Table("regression", (
    Prop("reg_points", "pts", "points", []),
    Prop("reg_view", "view", "choice", "density", choices=REG_VIEWS),
    Prop("reg_k", "k", "int", 20, lo=0, hi=MAX_STEPS),
    Prop("reg_ols", "ols", "bool", True),
    Prop("reg_bayes", "bayes", "bool", True),
    Prop("reg_task", "task", "task", None, families=tuple(REGRESSION_FAMILIES)),
    # the random-task panel; the family's default is the model's own (bound per run)
    Prop("reg_family", "family", "choice", "linear", choices=tuple(REGRESSION_FAMILIES)),
    Prop("reg_seed", "seed", "int", 0, lo=0, hi=SEED_MAX),
    Prop("reg_n", "n", "int", 16, lo=1),
    Prop("reg_mode", "feed", "choice", REG_FEED_MODES[0], choices=REG_FEED_MODES),
))

# ---- Train ---------------------------------------------------------------------------------------

TRAIN_MODES = ("scratch", "finetune")
TRAIN_LR_CHOICES = (1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2)
TRAIN_D_CHOICES = (8, 16, 32, 48, 64, 96, 128)


def _train_int(name: str, key: str, setting: str) -> Prop:
    lo, hi = TRAIN_BOUNDS[setting]
    return Prop(name, key, "int", int(FAST_DEFAULTS[setting]), lo=lo, hi=hi)


def _train_float(name: str, key: str, setting: str) -> Prop:
    lo, hi = TRAIN_BOUNDS[setting]
    return Prop(name, key, "float", float(FAST_DEFAULTS[setting]), lo=lo, hi=hi)


TRAIN = Table("train", (
    Prop("tr_mode", "mode", "choice", "scratch", choices=TRAIN_MODES),
    Prop("tr_objective", "obj", "choice", resolve_objective(FAST_DEFAULTS["objective"]),
         choices=OBJECTIVE_NAMES, canon=resolve_objective),
    Prop("tr_lr", "lr", "choice", FAST_DEFAULTS["lr"], choices=TRAIN_LR_CHOICES),
    _train_int("tr_batch", "batch", "batch_size"),
    _train_int("tr_chains", "chains", "chains"),
    _train_int("tr_lsteps", "lsteps", "langevin_steps"),
    _train_float("tr_lstep", "lstep", "step_size"),
    _train_float("tr_lnoise", "lnoise", "noise_std"),
    _train_int("tr_layers", "layers", "n_layer"),
    Prop("tr_d", "d", "choice", int(FAST_DEFAULTS["d_model"]), choices=TRAIN_D_CHOICES),
    _train_int("tr_pool", "pool", "task_pool"),  # finite task pool of M tasks; 0: the full prior
    Prop("tr_curve_pool", "cpool", "bool", False),  # the ICL curve on tasks from the pool
))
# The Train form's widget -> the live-training setting it sets (iclebm.ui.jobs.live_settings).
TRAIN_SETTINGS = {"tr_lr": "lr", "tr_batch": "batch_size", "tr_chains": "chains",
                  "tr_lsteps": "langevin_steps", "tr_lstep": "step_size", "tr_lnoise": "noise_std",
                  "tr_layers": "n_layer", "tr_d": "d_model", "tr_objective": "objective",
                  "tr_pool": "task_pool"}

# ---- Is it Bayesian? -------------------------------------------------------------------------------

GAP_LEARNERS = ("model", "kde_scott", "kde_scipy", "em_mixture", "em_bic", "gaussian")

BAYESIAN = Table("bayesian", (
    POINTS,
    MIXTURE,
    Prop("by_orders", "orders", "int", 8, lo=2, hi=24),
    Prop("by_steps", "steps", "int", 4, lo=1, hi=8),
    Prop("by_paths", "paths", "int", 32, lo=8, hi=64),
    Prop("by_learner", "learner", "choice", "model", choices=GAP_LEARNERS),
    Prop("by_n", "n", "int", None, lo=0),  # the map's highlighted n; None = all points (cap bound per run)
))

TABLES = {t.page: t for t in (DENSITY, INSIDE, REGRESSION, TRAIN, BAYESIAN)}
