"""Typed errors the library raises, each carrying a plain-language reason."""


class IclebmError(Exception):
    """Base class for every error raised on purpose by iclebm."""


class CheckpointError(IclebmError):
    """A checkpoint file is missing, truncated, corrupt, not safetensors, or does not fit its card."""


class ContextTooLongError(IclebmError, ValueError):
    """A context has more points than the model reads."""


class TrainingDivergedError(IclebmError):
    """Training produced NaN/inf too many times in a row."""


class TaskFamilyError(IclebmError, ValueError):
    """A card names an unknown task family, or a tool needs another kind of model (density vs regression)."""


class CapabilityError(IclebmError, ValueError):
    """Something the model or its prior does not support was asked for (the reason says what and why)."""


class UnknownObjectiveError(IclebmError, ValueError):
    """An objective name (config, card, CLI flag or share link) that the registry does not know."""


class DataError(IclebmError, ValueError):
    """A points file or pasted text that cannot be read as points at all (empty, binary, too large, one
    column, every row bad, mixed delimiters), or points that do not fit the model's box."""


class BadRowError(DataError):
    """A row of a points table that is not a point; `row` counts data rows from 1 (no header, blank or
    comment lines), `line` is the line of the file, `reason` says what is wrong."""

    def __init__(self, row: int, line: int, reason: str) -> None:
        super().__init__(f"row {row} (line {line}): {reason}")
        self.row, self.line, self.reason = row, line, reason


class TaskPoolError(IclebmError, ValueError):
    """A task pool size that is not a whole number in [0, MAX_TASK_POOL], or a card's stored pool that
    cannot be read back (wrong family, missing or malformed task parameters)."""
