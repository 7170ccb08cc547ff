"""Errors the user can cause. The CLI prints their message as one line and exits non-zero."""


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
