"""Typed errors the library raises, each carrying a plain-language reason."""


class IclebmError(Exception):
    """Base class for every error raised on purpose by iclebm."""


class CheckpointError(IclebmError):
    """A checkpoint file is missing, truncated, corrupt, not safetensors, or does not fit its card."""


class ContextTooLongError(IclebmError, ValueError):
    """A context has more points than the model reads."""


class TrainingDivergedError(IclebmError):
    """Training produced NaN/inf too many times in a row."""


class UnknownObjectiveError(IclebmError, ValueError):
    """An objective name (config, card, CLI flag or share link) that the registry does not know."""
