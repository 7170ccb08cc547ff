"""Errors the user can cause. The CLI prints their message as one line and exits non-zero."""
from __future__ import annotations

import operator


class FlexVARError(ValueError):
    """Bad input: a file, a schedule, a label or a parameter that cannot be used."""


class ConfigError(FlexVARError):
    """An unknown preset or an impossible configuration."""


class ScheduleError(FlexVARError):
    """A schedule that cannot be run."""


class SamplingError(FlexVARError):
    """Sampling or guidance parameters outside their range."""


class CheckpointError(FlexVARError):
    """A checkpoint that is missing, unreadable, of the wrong kind, or does not fit its partner."""


class InputError(FlexVARError):
    """Labels, images, masks or codes that do not fit the model or the schedule."""


def as_integer(value) -> int | None:
    """value as an int where it is an integer (Python's, NumPy's, a one-element integer tensor), else None: bools,
    floats and strings are not. The rule every input check uses for labels, seeds, sides and pixel sizes."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters), for one-line errors."""
    return (str(e).strip().splitlines() or [""])[0][:limit]
