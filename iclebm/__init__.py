"""iclebm: in-context learning of energy functions, explorable."""

from .errors import CheckpointError, ContextTooLongError, IclebmError, TrainingDivergedError
from .model import ContextCache, EnergyConfig, EnergyTransformer

__all__ = [
    "CheckpointError",
    "ContextCache",
    "ContextTooLongError",
    "EnergyConfig",
    "EnergyTransformer",
    "IclebmError",
    "TrainingDivergedError",
]
