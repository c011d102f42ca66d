"""Nested values (pytrees) in ``Run.log``: one key per leaf, JAX arrays and nodes."""

from __future__ import annotations

import dataclasses
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepstore as ss
from stepstore.tensors.staging import ON_DEVICE, Staged, StagingPool, host_array

jax = pytest.importorskip("jax")
jnp = jax.numpy

Moments = namedtuple("Moments", "mu nu")


def test_nested_dicts_lists_and_named_tuples_record_one_key_per_leaf(new_run, store_path):
    run = new_run()
    for step in range(3):
        tree = {
            "params": {"dense": {"kernel": np.full((2, 3), step, np.float32), "bias": [step]}},
            "opt": Moments(mu=jnp.float32(step / 2), nu=(1.0, jnp.arange(2.0) + step)),
        }
        run.log({"loss": float(step), **tree}, step=step)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.keys() == [
        "loss",
        "opt/mu",
        "opt/nu/0",
        "opt/nu/1",
        "params/dense/bias/0",
        "params/dense/kernel",
    ]
    assert np.array_equal(
        view.tensor("params/dense/kernel")[:], np.repeat(np.arange(3), 6).reshape(3, 2, 3)
    )
    assert view.tensor("params/dense/kernel").dtype == np.float32
    assert np.array_equal(view.tensor("opt/nu/1")[:], [[0, 1], [1, 2], [2, 3]])
    mu = view.scalars("opt/mu")
    assert mu["step"].tolist() == [0, 1, 2] and mu["value"].tolist() == [0.0, 0.5, 1.0]
    assert view.scalars("params/dense/bias/0")["value"].tolist() == [0.0, 1.0, 2.0]


def test_a_list_of_images_stays_one_image_value(new_run, store_path):
    run = new_run()
    pixels = np.zeros((4, 4), np.uint8)
    run.log({"samples": {"grid": [ss.Image(pixels), ss.Image(pixels + 9)]}}, step=0)
    run.finish()
    images = ss.open(store_path).run(run.id).images("samples/grid")
    assert [int(image.array.max()) for image in images] == [0, 9]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    step: Any
    params: Any


def test_registered_jax_nodes_are_flattened_by_field(new_run, store_path):
    run = new_run()
    state = TrainState(step=jnp.int32(4), params={"w": jnp.ones((2, 2), jnp.bfloat16)})
    run.log({"state": state}, step=4)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.keys() == ["state/params/w", "state/step"]
    w = view.tensor("state/params/w")
    assert str(w.dtype) == "bfloat16" and np.array_equal(
        w.at(4).astype(np.float32), np.ones((2, 2))
    )
    assert view.scalars("state/step")["value"].tolist() == [4.0]


def test_a_donated_jax_buffer_does_not_change_what_was_logged(new_run, store_path):
    run = new_run()
    update = jax.jit(lambda params: {"w": params["w"] + 1}, donate_argnums=0)
    params = {"w": jnp.zeros(3)}
    for step in range(4):
        run.log({"params": params}, step=step)
        params = update(params)
    run.finish()
    stored = ss.open(store_path).run(run.id).tensor("params/w")[:]
    assert np.array_equal(stored, np.repeat(np.arange(4.0), 3).reshape(4, 3))


def test_a_staged_device_array_is_read_by_the_writer_and_not_pooled():
    pool = StagingPool(1 << 20)
    value = jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3)
    staged = Staged(value, "bfloat16", ON_DEVICE)
    host = host_array(staged)
    assert host.dtype == np.uint16
    assert np.array_equal(np.asarray(value).view(np.uint16), host)
    pool.give(staged)
    assert pool.take((2, 3), np.dtype(np.uint16)) is not host


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"a/b": 1.0, "a": {"b": 2.0}}, "key 'a/b' is given twice in one log() call"),
        ({"grads": {}}, "key 'grads': an empty dict has no value to record"),
        ({"grads": []}, "key 'grads': an empty list has no value to record"),
        ({"p": {(1, 2): 1.0}}, "key 'p': a nested dict key must be a str or an int"),
        ({"p": {"x": "text"}}, "key 'p/x': cannot record 'text' of type str"),
    ],
)
def test_bad_trees_are_refused_whole(new_run, store_path, values, message):
    run = new_run()
    run.log({"kept": 1.0}, step=0)
    with pytest.raises(ss.InvalidValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run.log({"kept": 2.0, **values}, step=1)
    run.log({"kept": 3.0}, step=1)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.keys() == ["kept"]
    assert view.scalars("kept")["value"].tolist() == [1.0, 3.0]


names = st.text("abcXYZ019_.-é", min_size=1, max_size=6)
leaves = st.floats(allow_nan=False, width=64)
trees = st.recursive(
    leaves,
    lambda children: (
        st.dictionaries(names, children, min_size=1, max_size=3)
        | st.lists(children, min_size=1, max_size=3)
    ),
    max_leaves=12,
)


def _paths(prefix: str, tree: Any) -> dict[str, float]:
    if isinstance(tree, dict):
        return {
            k: v
            for name, child in tree.items()
            for k, v in _paths(f"{prefix}/{name}", child).items()
        }
    if isinstance(tree, list):
        return {
            k: v for i, child in enumerate(tree) for k, v in _paths(f"{prefix}/{i}", child).items()
        }
    return {prefix: tree}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=trees)
def test_every_leaf_reads_back_under_its_path(tmp_path_factory, tree):
    store = tmp_path_factory.mktemp("trees") / "store"
    expected = _paths("t", tree)
    with ss.init("trees", store=store, flush_interval=0.05) as run:
        run.log({"t": tree}, step=7)
    view = ss.open(store).run(run.id)
    frame = view.scalars()
    got = dict(zip(frame["key"], frame["value"], strict=True))
    assert got == expected
    assert set(frame["step"]) == {7}
