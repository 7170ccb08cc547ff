"""Step schedules: the list of token-map sizes (h, w), coarse to fine.

A schedule can be written as a preset name of the paper's table 7
("256-10"), a list of sides ([1, 2, 4, 8, 16] or "1,2,4,8,16"), a list of
(h, w) pairs ([(1, 2), (2, 4)] or "1x2,2x4"), or built from a final image size
and a step count with `Schedule.from_size`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

from .errors import ScheduleError, as_integer


# paper, table 7: final image size - number of steps -> sides per step
PRESETS: dict[str, tuple[int, ...]] = {
    "256-6": (1, 2, 4, 6, 10, 16),
    "256-7": (1, 2, 3, 5, 8, 11, 16),
    "256-8": (1, 2, 3, 4, 6, 10, 13, 16),
    "256-9": (1, 2, 3, 4, 5, 7, 10, 13, 16),
    "256-10": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    "256-11": (1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 16),
    "256-12": (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16),
    "256-13": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16),
    "384-11": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 24),
    "512-12": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 23, 32),
    "512-15": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 23, 32),
}
DEFAULT = "256-10"
PATCH = 16  # pixels per token side

ScheduleLike = Union["Schedule", str, Sequence[int], Sequence[Sequence[int]]]


@dataclass(frozen=True)
class Schedule:
    """An ordered tuple of (h, w) token maps; neither side may shrink from one step to the next."""

    steps: tuple[tuple[int, int], ...]

    def __post_init__(self):
        if not self.steps:
            raise ScheduleError("schedule has no steps")
        prev = (0, 0)
        for i, hw in enumerate(self.steps):
            if len(hw) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in hw):
                raise ScheduleError(f"step {i + 1} is {hw!r}, expected two integer sides")
            h, w = hw
            if h < 1 or w < 1:
                raise ScheduleError(f"step {i + 1} has a side of {min(h, w)}; sides must be at least 1")
            if h < prev[0] or w < prev[1]:
                raise ScheduleError(
                    f"schedule decreases at step {i + 1}: {prev[0]}x{prev[1]} -> {h}x{w}; steps go coarse to fine")
            prev = hw

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def parse(cls, spec: ScheduleLike) -> "Schedule":
        """Accept a Schedule, a preset name, "1,2,4" / "1x2,2x4" text, a list of sides or of (h, w)."""
        if isinstance(spec, Schedule):
            return spec
        if isinstance(spec, str):
            return cls._parse_text(spec.strip())
        try:
            items = list(spec)
        except TypeError:
            raise ScheduleError(f"cannot read a schedule from {spec!r}") from None
        steps = []
        for it in items:
            if as_integer(it) is not None:
                steps.append((as_integer(it), as_integer(it)))
            elif isinstance(it, (tuple, list)) and len(it) == 2:
                steps.append((_as_int(it[0]), _as_int(it[1])))
            else:
                raise ScheduleError(f"schedule entry {it!r} is neither a side nor an (h, w) pair")
        return cls(tuple(steps))

    @classmethod
    def _parse_text(cls, text: str) -> "Schedule":
        if text in PRESETS:
            return cls(tuple((s, s) for s in PRESETS[text]))
        steps = []
        for part in text.lower().split(","):
            try:
                h, w = part.split("x") if "x" in part else (part, part)
                steps.append((int(h), int(w)))
            except ValueError:
                if "," not in text:
                    raise ScheduleError(f"unknown schedule preset {text!r}; presets: {', '.join(PRESETS)}") from None
                raise ScheduleError(f"cannot read schedule step {part.strip()!r} in {text!r}") from None
        return cls(tuple(steps))

    @classmethod
    def from_size(cls, size: int | tuple[int, int], num_steps: int) -> "Schedule":
        """Build a schedule ending at an image of `size` pixels (int or (H, W), multiples of 16).

        The long side grows geometrically from 1 to its final token count (a table-7
        preset is used when one matches); the short side follows the aspect ratio.
        """
        H, W = (size, size) if isinstance(size, int) else size
        if H < PATCH or W < PATCH or H % PATCH or W % PATCH:
            raise ScheduleError(f"image size {H}x{W} must be a positive multiple of {PATCH} in both sides")
        h, w = H // PATCH, W // PATCH
        long = max(h, w)
        if not 1 <= num_steps <= long:
            raise ScheduleError(f"{num_steps} steps cannot reach {h}x{w} tokens: use 1 to {long} steps")
        preset = f"{H}-{num_steps}"
        if h == w and preset in PRESETS:
            return cls.parse(preset)
        sides = _geometric_sides(long, num_steps)
        steps = tuple((max(1, round(s * h / long)), max(1, round(s * w / long))) for s in sides)
        steps = steps[:-1] + ((h, w),)
        return cls(steps)

    # ---- properties -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    @property
    def token_counts(self) -> tuple[int, ...]:
        return tuple(h * w for h, w in self.steps)

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Index of each step's first token in the whole sequence (and the total last)."""
        out, acc = [0], 0
        for n in self.token_counts:
            acc += n
            out.append(acc)
        return tuple(out)

    @property
    def final(self) -> tuple[int, int]:
        return self.steps[-1]

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.final
        return h * PATCH, w * PATCH

    @property
    def is_square(self) -> bool:
        return all(h == w for h, w in self.steps)

    def name(self) -> str:
        """A short text form that `Schedule.parse` reads back."""
        for k, v in PRESETS.items():
            if self.is_square and tuple(h for h, _ in self.steps) == v:
                return k
        if self.is_square:
            return ",".join(str(h) for h, _ in self.steps)
        return ",".join(f"{h}x{w}" for h, w in self.steps)

    def __str__(self) -> str:
        return self.name()


def _as_int(v) -> int:
    if as_integer(v) is None:
        raise ScheduleError(f"schedule side {v!r} is not an integer")
    return as_integer(v)


def _geometric_sides(final: int, n: int) -> list[int]:
    """n non-decreasing sides from 1 to `final`, spaced geometrically, strictly increasing where possible."""
    if n == 1:
        return [final]
    sides = [max(1, round(math.exp(math.log(final) * i / (n - 1)))) for i in range(n)]
    # push duplicates up so the schedule keeps growing, keeping the last at `final`
    for i in range(1, n):
        sides[i] = max(sides[i], sides[i - 1] + 1)
    for i in range(n - 1, 0, -1):
        if sides[i] > final - (n - 1 - i):
            sides[i] = final - (n - 1 - i)
    return sides

