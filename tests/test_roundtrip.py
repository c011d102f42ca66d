"""What was logged is read back exactly: values bit for bit, steps, epochs, order."""

from __future__ import annotations

import math
import struct

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepstore as ss

from .conftest import FAST


def bits(values) -> list[int]:
    return [struct.unpack("<Q", struct.pack("<d", v))[0] for v in values]


def test_special_values_and_large_steps_round_trip(new_run, store_path):
    run = new_run()
    specials = [
        0.0,
        -0.0,
        1.5,
        -2.25e-308,
        5e-324,
        1.7976931348623157e308,
        math.inf,
        -math.inf,
        math.nan,
        struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0],
    ]
    steps = [0, 1, 2**31, 2**40, 2**53 + 1, 2**62 - 5, 2**62 - 4, 2**62 - 3, 2**62 - 2, 2**62]
    for step, value in zip(steps, specials, strict=True):
        run.log({"v": value}, step=step, epoch=step % 7)
    run.finish()
    df = ss.open(store_path).run(run.id).scalars("v")
    assert df["step"].tolist() == steps
    assert df["epoch"].tolist() == [s % 7 for s in steps]
    assert bits(df["value"]) == bits(specials)
    assert df["key"].astype(str).unique().tolist() == ["v"]


def test_ints_bools_numpy_and_torch_scalars_become_float64(new_run, store_path):
    torch = __import__("pytest").importorskip("torch")
    run = new_run()
    run.log(
        {
            "a": 3,
            "b": True,
            "c": np.float32(0.1),
            "d": np.int64(-7),
            "e": np.array(2.5),
            "f": torch.tensor(0.75),
            "g": torch.tensor(5, dtype=torch.int64),
            "h": 2**53,
        }
    )
    run.finish()
    summary = ss.open(store_path).run(run.id).summary
    got = {k: v["last"] for k, v in summary.items()}
    assert got == {
        "a": 3.0,
        "b": 1.0,
        "c": float(np.float32(0.1)),
        "d": -7.0,
        "e": 2.5,
        "f": 0.75,
        "g": 5.0,
        "h": float(2**53),
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    points=st.lists(
        st.tuples(
            st.integers(0, 3),  # step increment
            st.one_of(st.none(), st.integers(0, 2**62)),
            st.floats(allow_nan=True, allow_infinity=True, width=64),
        ),
        min_size=1,
        max_size=300,
    ),
    chunk_size=st.sampled_from([16, 64, 8192]),
)
def test_any_series_round_trips_bit_exactly(tmp_path_factory, points, chunk_size):
    store = tmp_path_factory.mktemp("rt")
    # allow_rewind: increments of 0 put two points of one key at one step
    run = ss.init("prop", store=store, chunk_size=chunk_size, allow_rewind=True, **FAST)
    step, expected = 0, []
    epoch_now = None
    for increment, epoch, value in points:
        step += increment
        run.log({"x": value}, step=step, epoch=epoch)
        epoch_now = epoch if epoch is not None else epoch_now
        expected.append((step, epoch_now, value))
    run.finish()
    df = ss.open(store).run(run.id).scalars("x")
    assert df["step"].tolist() == [e[0] for e in expected]
    assert [None if pd.isna(e) else int(e) for e in df["epoch"]] == [e[1] for e in expected]
    assert bits(df["value"]) == bits([e[2] for e in expected])


def test_many_keys_and_partial_chunks_read_back_while_running(new_run, store_path):
    run = new_run(chunk_size=16)
    for i in range(100):
        run.log({f"k{j}": float(i * j) for j in range(5)})
    run.flush()
    view = ss.open(store_path).run(run.id)
    df = view.scalars()
    assert sorted(df["key"].astype(str).unique()) == [f"k{j}" for j in range(5)]
    for j in range(5):
        part = df[df["key"] == f"k{j}"]
        assert part["value"].tolist() == [float(i * j) for i in range(100)]
        assert part["step"].tolist() == list(range(100))
    assert view.status == "running"


def test_time_column_is_utc_wall_clock(new_run, store_path):
    import time

    before = time.time()
    run = new_run()
    run.log({"x": 1.0})
    run.finish()
    after = time.time()
    t = ss.open(store_path).run(run.id).scalars("x")["time"].iloc[0]
    assert str(t.tz) == "UTC"
    assert before - 1e-3 <= t.timestamp() <= after + 1e-3
