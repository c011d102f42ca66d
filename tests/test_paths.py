"""Keys, run ids and artifact names map to paths that stay inside their run's folder and
never collide: not through ``.``/``..``, ``/``, absolute paths, letter case or length."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepstore as ss
from stepstore.tensors.paths import artifact_path, path_name, series_path

from .conftest import FAST

#: Text as users might type it plus everything else Unicode allows in a key.
names = st.one_of(
    st.sampled_from([".", "..", "...", "./x", "../x", "/etc", "a/../b", "A", "a", "%41", "+"]),
    st.text(min_size=1, max_size=300),
)


@given(names, names)
def test_distinct_names_get_distinct_components_even_ignoring_case(a: str, b: str) -> None:
    if a != b:
        assert path_name(a).casefold() != path_name(b).casefold()


@given(names)
def test_a_component_is_one_safe_name(text: str) -> None:
    name = path_name(text)
    assert name not in ("", ".", "..")
    assert not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\0" not in name
    assert len(name.encode()) <= 255
    assert name.isascii()


def test_plain_names_map_to_themselves() -> None:
    for text in ("loss", "val_acc", "fc1.weight", "layer-3", "0"):
        assert path_name(text) == text
    assert series_path("ab12", "weights/fc1.weight") == "ab12/weights%2Ffc1.weight"
    assert artifact_path("ab12", "model.pt", 2) == "ab12/@rank2/artifacts/model.pt"


def test_dot_keys_stay_in_their_own_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    logged = {}
    for number in range(2):
        run = ss.init("paths", store=store, **FAST)
        values = {key: np.full(4, number * 10 + i, np.float32) for i, key in enumerate(("..", "."))}
        run.log(values, step=0)
        run.log({"pics": ss.Image(np.full((2, 2), number, np.uint8))}, step=0)
        run.finish()
        logged[run.id] = values
    arrays = store / "arrays"
    assert sorted(p.name for p in arrays.iterdir()) == sorted(logged)  # nothing beside runs
    for run_id, values in logged.items():
        view = ss.open(store).run(run_id)
        for key, expected in values.items():
            np.testing.assert_array_equal(view.tensor(key).at(0), expected)
    assert ss.open(store).check() == []


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=names)
def test_any_key_is_refused_or_read_back_from_its_own_run(tmp_path: Path, key: str) -> None:
    store = Path(tempfile.mkdtemp(dir=tmp_path)) / "store"  # one per example
    data = np.arange(6, dtype=np.int32).reshape(2, 3)
    try:
        with ss.init("paths", store=store, **FAST) as run:
            run.log({key: data}, step=3)
    except ss.StepstoreError:
        return
    np.testing.assert_array_equal(ss.open(store).run(run.id).tensor(key).at(3), data)
    root = (store / "arrays" / run.id).resolve()
    for path in (store / "arrays").rglob("*"):
        assert path.resolve().is_relative_to(root)
