"""Named model + training settings. `mog2d` built the shipped model; `small` trains in minutes;
`mdn2d` is the parametric peer (MixtureDensityTransformer, exact NLL); `linreg` and `sinusoid` build the
shipped regression models (E(y | x, D), thinking defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from iclebm.dynamics.langevin import SamplerConfig
from iclebm.dynamics.thinking import ThinkingConfig
from iclebm.models.energy import EnergyConfig
from iclebm.models.mixture import MixtureConfig
from iclebm.tasks import LinearPrior, MixturePrior, SinusoidPrior
from iclebm.training.config import TrainConfig

BOX = (-12.0, 12.0)
MOG_PRIOR = MixturePrior(n_components=3, mean_std=3.0, component_std=(0.33, 0.5), mean_limit=8.0)
# The generalist's prior (free clicking): 1-6 rotated elliptical components, geometric-mean std
# 0.2-1.5, axis ratio up to 4:1, means spread 3.
WIDE_PRIOR = MixturePrior(
    n_components=(1, 6), mean_std=3.0, component_std=(0.2, 1.5), mean_limit=8.0, aspect_ratio=(1.0, 4.0)
)


@dataclass
class Preset:
    model: EnergyConfig | MixtureConfig  # the config type picks the architecture and objective
    train: TrainConfig
    steps: int
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    box: tuple[float, float] = BOX
    thinking: ThinkingConfig | None = None  # regression presets: default prediction settings


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()


def _mixture_train(**settings) -> TrainConfig:
    """The density presets' shared training settings (CD: data-started chains, Langevin at the
    sampler's defaults) on the 3-component prior; `settings` set the rest."""
    common = dict(extra_points=8, step_size=0.05, noise_std=0.316, grad_clip_x=20.0, data_init_frac=0.8,
                  alpha=1e-2, grad_clip=1.0, box=BOX, task=MOG_PRIOR.to_card())
    return TrainConfig(**{**common, **settings})


def _cd_sampler() -> SamplerConfig:  # fresh objects per preset: models keep (and calibration edits) theirs
    return SamplerConfig(steps=200, step_size=0.05, noise_std=0.316, grad_clip=20.0)


def _small_model() -> EnergyConfig:
    return EnergyConfig(n_layer=2, n_head=4, d_model=32, max_context=64, base_std=3.0)


def _mog2d() -> Preset:
    return Preset(
        model=EnergyConfig(n_layer=4, n_head=4, d_model=64, max_context=64, base_std=3.0),
        train=_mixture_train(batch_size=16, context_len=64, chains=4, langevin_steps=15, lr=1e-3, warmup=50),
        steps=5000, sampler=_cd_sampler(),
    )


def _small() -> Preset:
    return Preset(
        model=_small_model(),
        train=_mixture_train(batch_size=16, context_len=24, chains=2, langevin_steps=10, lr=3e-3, warmup=20,
                             grid_resolution=4, exact_positions=8, kernel_points=16),  # for --objective exact
        steps=1200, sampler=_cd_sampler(),
    )


def _mog2d_wide() -> Preset:
    """The generalist: mog2d's architecture on the wide prior, contexts of 64 points."""
    base = _mog2d()
    train = replace(base.train, task=WIDE_PRIOR.to_card(), context_len=64, extra_points=16)
    return Preset(model=base.model, train=train, steps=base.steps, sampler=base.sampler)


def _mdn2d() -> Preset:
    """Same backbone as mog2d, an 8-component full-covariance mixture head, exact NLL.

    No Langevin: the CD fields of TrainConfig are unused (set to neutral values). Sequences
    of max_context + 1 points train every prefix length 0..64. The sampler is plain
    unadjusted Langevin at temperature 1 (noise = sqrt(2 step)) with a small step, since the
    density is exactly normalised and needs no tuned temperature.
    """
    return Preset(
        model=MixtureConfig(n_layer=4, n_head=4, d_model=64, max_context=64, n_components=8),
        train=TrainConfig(
            batch_size=16, context_len=65, extra_points=0, chains=1, langevin_steps=0, alpha=0.0,
            lr=1e-3, lr_min_frac=0.1, warmup=100, grad_clip=1.0, box=BOX, task=MOG_PRIOR.to_card(),
        ),
        steps=6000,
        sampler=SamplerConfig(steps=300, step_size=0.01, noise_std=0.1414, grad_clip=20.0),
    )


def _fast() -> Preset:
    """The live-training preset: `small`'s model, trained on 32-point contexts (the ICL curve's
    largest n) by the exact likelihood with importance points: per step 32 tasks, 8 random
    positions each, Z from a 4 x 4 jittered grid plus 16 draws around the prefix. That closes
    about 80 % of the prior-predictive -> oracle gap at n = 32 in 60 s on one core, against about
    30 % for contrastive divergence (`objective="cd"`, the Train page's switch; README, "Live
    training", has both measured side by side)."""
    return Preset(
        model=_small_model(),
        train=_mixture_train(batch_size=32, context_len=32, chains=2, langevin_steps=10, lr=3e-3, warmup=20,
                             objective="exact", grid_resolution=4, exact_positions=8, kernel_points=16),
        steps=1200, sampler=_cd_sampler(),
    )


LINREG_BOX = (-10.0, 10.0)
LINREG_PRIOR = LinearPrior(x_range=(-6.0, 6.0), w_std=0.5, b_std=1.0, noise_std=0.5)
SINUSOID_BOX = (-6.0, 6.0)
SINUSOID_PRIOR = SinusoidPrior(x_range=(-5.0, 5.0), amplitude=(0.5, 3.0), frequency=(0.5, 1.5),
                               phase=(0.0, 6.283185307179586), noise_std=0.3)


def _regression(prior: LinearPrior | SinusoidPrior, box: tuple[float, float], input_scale: float,
                steps: int, d_model: int) -> Preset:
    # Sized for ~15 minutes on one shared CPU core: contexts of 34 points train n = 0..33.
    return Preset(
        model=EnergyConfig(n_layer=3, n_head=4, d_model=d_model, max_context=64, input_scale=input_scale,
                           base_std=box[1] / 2, base_axes="y"),
        train=TrainConfig(
            batch_size=16, context_len=34, chains=4, langevin_steps=15, step_size=0.05, noise_std=0.316,
            grad_clip_x=20.0, data_init_frac=0.5, alpha=1e-3, lr=2e-3, warmup=50, grad_clip=1.0, box=box,
            task=prior.to_card(), objective="exact", y_grid=24,
        ),
        steps=steps,
        box=box,
        thinking=ThinkingConfig(start="zero", steps=20, step_size=0.1, grad_clip=10.0),
    )


def _linreg() -> Preset:
    return _regression(LINREG_PRIOR, LINREG_BOX, input_scale=0.25, steps=1200, d_model=48)


def _sinusoid() -> Preset:
    return _regression(SINUSOID_PRIOR, SINUSOID_BOX, input_scale=0.4, steps=1200, d_model=64)


PRESETS = {"mog2d": _mog2d, "mog2d-wide": _mog2d_wide, "small": _small, "fast": _fast, "mdn2d": _mdn2d,
           "linreg": _linreg, "sinusoid": _sinusoid}
