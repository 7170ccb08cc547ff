import pytest

from flexvar.errors import ScheduleError
from flexvar.schedule import PRESETS, Schedule


def test_presets_match_table_7():
    assert len(PRESETS) == 11
    for name, sides in PRESETS.items():
        s = Schedule.parse(name)
        size, n = map(int, name.split("-"))
        assert len(s) == n and s.image_size == (size, size) and s.steps[-1] == (sides[-1], sides[-1])
    assert Schedule.parse("256-10").total_tokens == 1 + 4 + 9 + 16 + 25 + 36 + 64 + 100 + 169 + 256


@pytest.mark.parametrize("spec, steps", [
    ([1, 2, 4], ((1, 1), (2, 2), (4, 4))),
    ("1,2,4", ((1, 1), (2, 2), (4, 4))),
    ([(1, 2), (2, 4)], ((1, 2), (2, 4))),
    ("1x2, 2x4,3x6", ((1, 2), (2, 4), (3, 6))),
    ([1, (2, 3)], ((1, 1), (2, 3))),
])
def test_parse_forms(spec, steps):
    s = Schedule.parse(spec)
    assert s.steps == steps
    assert Schedule.parse(s.name()) == s
    assert s.offsets[-1] == s.total_tokens


@pytest.mark.parametrize("spec, msg", [
    ("256-99", "unknown schedule preset"),
    ("fast", "unknown schedule preset"),
    ("1,4,2", "decreases at step 3"),
    ("1x2,2x1", "decreases at step 2"),
    ("0,1,2", "at least 1"),
    ([1, -2], "at least 1"),
    ("1,a", "cannot read schedule step"),
    ([], "no steps"),
    ([1.5], "neither a side"),
])
def test_bad_schedules(spec, msg):
    with pytest.raises(ScheduleError, match=msg):
        Schedule.parse(spec)


def test_from_size():
    assert Schedule.from_size(256, 10) == Schedule.parse("256-10")
    s = Schedule.from_size((256, 512), 8)
    assert s.final == (16, 32) and len(s) == 8 and s.steps[0] == (1, 1)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(s.steps, s.steps[1:]))
    assert len(set(s.steps)) == 8  # keeps growing
    wide = Schedule.from_size((128, 1024), 5)
    assert wide.final == (8, 64) and all(h >= 1 for h, _ in wide)
    with pytest.raises(ScheduleError, match="multiple of 16"):
        Schedule.from_size(250, 5)
    with pytest.raises(ScheduleError, match="cannot reach"):
        Schedule.from_size(64, 9)


def test_schedule_entries_follow_the_shared_integer_rule():
    """Sides as NumPy or tensor integers are sides (the rule labels and seeds follow: `errors.as_integer`); bools
    and floats are not."""
    import numpy as np
    import torch
    assert Schedule.parse(np.array([1, 2, 4])).steps == ((1, 1), (2, 2), (4, 4))
    assert Schedule.parse([(np.int64(1), 2), (2, torch.tensor(4))]).steps == ((1, 2), (2, 4))
    for bad in ([True, 2], [1.0, 2], [(1, 2.5)]):
        with pytest.raises(ScheduleError):
            Schedule.parse(bad)
