"""Reading scalars into pandas: step ranges over ordered and rewound series, column types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import stepstore as ss
from stepstore.query.scalars import to_frame
from stepstore.series.chunk import NO_EPOCH, Columns

STEPS = {
    "ordered": [*range(0, 80, 2)],
    # rewound inside the first chunk (of 16 points), whose ends are steps 0 and 12
    "rewound": [*range(10), 3, 4, 5, *range(10, 40)],
    # rewound inside a later chunk: points 32-47 are steps 32-39, then 2-9
    "rewound later": [*range(36), *range(36, 40), *range(2, 14), *range(40, 60)],
}


@pytest.mark.parametrize("kind", list(STEPS))
def test_a_step_range_holds_exactly_the_points_inside_it(new_run, store_path, kind):
    steps = STEPS[kind]
    rewound = kind != "ordered"
    run = new_run(chunk_size=16, allow_rewind=rewound)
    for i, step in enumerate(steps):
        run.log({"loss": float(i)}, step=step)
    run.finish()
    with ss.open(store_path) as store:
        view = store.run(run.id)
        for low, high in [(3, 5), (0, 0), (15, 33), (-5, 2), (39, 100), (41, 49), (4, 6)]:
            frame = view.scalars("loss", steps=(low, high))
            inside = [(s, float(i)) for i, s in enumerate(steps) if low <= s <= high]
            assert list(zip(frame["step"], frame["value"], strict=True)) == inside


def test_frame_columns_and_types():
    first = Columns(
        np.array([0, 1, 2]),
        np.array([NO_EPOCH, 4, NO_EPOCH]),
        np.array([0, 1_700_000_000_000_001, -1]),
        np.array([0.5, np.nan, 2.0]),
    )
    second = Columns(np.array([7]), np.array([NO_EPOCH]), np.array([5]), np.array([1.0]))
    frame = to_frame(["b", "a", "b"], [first, second, first])
    assert list(frame.columns) == ["key", "step", "epoch", "time", "value"]
    assert frame["key"].tolist() == ["b"] * 3 + ["a"] + ["b"] * 3
    assert frame["key"].cat.categories.tolist() == ["b", "a"]
    assert frame["key"].cat.categories.dtype == object
    assert frame["step"].dtype == np.int64 and frame["value"].dtype == np.float64
    assert str(frame["epoch"].dtype) == "Int64"
    assert frame["epoch"].isna().tolist() == [True, False, True, True, True, False, True]
    assert frame["epoch"].dropna().tolist() == [4, 4]
    times = pd.to_datetime(np.r_[first.time, second.time, first.time], unit="us", utc=True)
    assert frame["time"].dtype == times.dtype
    assert frame["time"].tolist() == times.tolist()
    no_epoch = to_frame(["a"], [second], ranks=[3])
    assert list(no_epoch.columns) == ["key", "rank", "step", "epoch", "time", "value"]
    assert no_epoch["epoch"].isna().all() and no_epoch["rank"].tolist() == [3]


def test_a_rewound_chunk_indexed_by_its_ends_still_checks_clean(new_run, store_path):
    """Chunks before 0.5 stored their first and last step, not the smallest and largest:
    ``check`` accepts either, and reports a step range that is neither."""
    import sqlite3

    steps = STEPS["rewound later"]
    run = new_run(chunk_size=16, allow_rewind=True)
    for i, step in enumerate(steps):
        run.log({"loss": float(i)}, step=step)
    run.finish()
    db = sqlite3.connect(store_path / "stepstore.db")
    with db:
        stored = db.execute("SELECT first_step, last_step FROM chunks WHERE seq = 2").fetchone()
        assert stored == (2, 39)
        db.execute("UPDATE chunks SET first_step = 32, last_step = 9 WHERE seq = 2")  # as 0.4
    with ss.open(store_path) as store:
        assert store.check() == []
    with db:
        db.execute("UPDATE chunks SET first_step = 3, last_step = 39 WHERE seq = 2")
    with ss.open(store_path) as store:
        (problem,) = store.check()
        assert "first_step" in problem.what
    db.close()
