"""Bad-input fuzzing of the public API: every failure is a StepstoreError naming the problem,
no other exception escapes, and nothing already recorded is lost."""

from __future__ import annotations

import contextlib
import math
import tempfile

import numpy as np
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepstore as ss
from stepstore.cli import main

from .conftest import FAST

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.complex_numbers(),
    st.lists(st.floats(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(lambda n: np.zeros(n), st.integers(0, 3)),
    st.sampled_from([np.float32(1.5), np.int64(3), np.array(2.0), np.array("x"), object()]),
)
keys = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.sampled_from(["loss", "w"]))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    calls=st.lists(
        st.tuples(
            keys,
            anything,
            st.one_of(st.none(), st.integers(-5, 2**64)),
            st.one_of(st.none(), st.integers(-3, 5), st.text(max_size=2)),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_log_accepts_or_explains_and_keeps_what_it_accepted(tmp_path_factory, calls):
    store = tmp_path_factory.mktemp("fuzz")
    run = ss.init("fuzz", store=store, **FAST)
    kept: dict[str, list[float]] = {}
    for key, value, step, epoch in calls:
        try:
            run.log({"anchor": 1.0, key: value}, step=step, epoch=epoch)
        except ss.StepstoreError as exc:
            assert str(exc)  # a message, naming what was wrong
            continue
        except TypeError as exc:  # unhashable key: Python refuses the dict itself
            assert "unhashable" in str(exc)
            continue
        kept.setdefault("anchor", []).append(1.0)
        number = isinstance(value, (bool, int, float, np.number)) or (
            isinstance(value, np.ndarray) and value.ndim == 0
        )
        if number and isinstance(key, str):
            kept.setdefault(key, []).append(float(value))
    run.finish()
    view = ss.open(store).run(run.id)
    for key, values in kept.items():
        got = view.scalars(key)["value"].tolist() if key in view.keys("scalar") else []
        if key == "anchor":
            assert len(got) == len(values)
        else:
            assert [v for v in got if not math.isnan(v)] == [v for v in values if not math.isnan(v)]


@settings(max_examples=40, deadline=None)
@given(
    args=st.lists(
        st.sampled_from(
            [
                "runs",
                "show",
                "export",
                "check",
                "copy",
                "--json",
                "--where",
                "--format",
                "csv",
                "-o",
                "x",
                "--store",
                "--from",
                "--to",
                "'",
                "params.a < ",
                "--repair",
                "nope",
            ]
        ),
        max_size=6,
    )
)
def test_cli_never_shows_a_traceback(args):
    with tempfile.TemporaryDirectory() as cwd, contextlib.chdir(cwd):
        result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
