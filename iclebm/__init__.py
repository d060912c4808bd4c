"""iclebm: in-context learning of energy functions, explorable.

    import iclebm
    model = iclebm.load_checkpoint()          # the shipped model, eval mode, model.card set
    e = model.energy(query, context)          # (B, M, 2), (B, N, 2) -> (B, M)
"""

from .checkpoints import DEFAULT_CHECKPOINT, load_checkpoint, save_checkpoint
from .errors import CheckpointError, ContextTooLongError, IclebmError, TrainingDivergedError
from .mdn import MixtureConfig, MixtureDensityTransformer
from .model import ContextCache, EnergyConfig, EnergyTransformer
from .sampling import SamplerConfig, langevin
from .tasks import PROBE_FAMILIES, GaussianMixture, MixturePrior
from .training import TrainConfig, Trainer

__all__ = [
    "DEFAULT_CHECKPOINT",
    "PROBE_FAMILIES",
    "CheckpointError",
    "ContextCache",
    "ContextTooLongError",
    "EnergyConfig",
    "EnergyTransformer",
    "GaussianMixture",
    "IclebmError",
    "MixtureConfig",
    "MixtureDensityTransformer",
    "MixturePrior",
    "SamplerConfig",
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "langevin",
    "load_checkpoint",
    "save_checkpoint",
]
__version__ = "0.1.0"
