"""Capture policies against a reference model written from their documented definitions."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepstore as ss
from stepstore.policies import AllOf, AnyOf

from .conftest import FAST


class History:
    def __init__(self) -> None:
        self.count = 0
        self.last_step = -1
        self.last_epoch = None
        self.refs: dict[str, float] = {}


def ref_changed(ref: float, value: float, rel: float, tol: float) -> bool:
    if math.isnan(ref) or math.isnan(value):
        return math.isnan(ref) != math.isnan(value)
    if ref == value:
        return False
    if math.isinf(ref) or math.isinf(value):
        return True
    return abs(value - ref) > max(rel * abs(ref), tol)


def next_mark(base: float, after: int) -> int:
    mark = 0
    if mark > after:
        return mark
    mark = 1
    while mark <= after:
        mark = max(mark + 1, math.ceil(mark * base))
    return mark


def ref_accept(policy, step, epoch, hist: History, latest: dict) -> bool:
    if isinstance(policy, AnyOf):
        return ref_accept(policy.a, step, epoch, hist, latest) or ref_accept(
            policy.b, step, epoch, hist, latest
        )
    if isinstance(policy, AllOf):
        return ref_accept(policy.a, step, epoch, hist, latest) and ref_accept(
            policy.b, step, epoch, hist, latest
        )
    if isinstance(policy, ss.every):
        return step % policy.n == 0
    if isinstance(policy, ss.every_epoch):
        return epoch is not None and (hist.count == 0 or epoch != hist.last_epoch)
    if isinstance(policy, ss.at):
        return step in policy.steps
    if isinstance(policy, ss.log_spaced):
        return hist.count == 0 or step >= next_mark(policy.base, hist.last_step)
    if isinstance(policy, ss.first):
        return hist.count < policy.n
    if isinstance(policy, ss.window):
        return step >= policy.start and (policy.stop is None or step < policy.stop)
    if isinstance(policy, ss.on_change):
        if policy.key not in latest:
            return False
        if policy.key not in hist.refs:
            return True
        return ref_changed(
            hist.refs[policy.key], latest[policy.key], policy.rel or 0.0, policy.abs or 0.0
        )
    raise AssertionError(policy)


def triggers(policy) -> set[str]:
    if isinstance(policy, (AnyOf, AllOf)):
        return triggers(policy.a) | triggers(policy.b)
    return {policy.key} if isinstance(policy, ss.on_change) else set()


leaf = st.one_of(
    st.integers(1, 7).map(ss.every),
    st.just(ss.every_epoch()),
    st.lists(st.integers(0, 60), min_size=1, max_size=6).map(lambda s: ss.at(*s)),
    st.sampled_from([1.5, 2, 3]).map(ss.log_spaced),
    st.integers(1, 10).map(ss.first),
    st.tuples(st.integers(0, 30), st.one_of(st.none(), st.integers(1, 30))).map(
        lambda t: ss.window(t[0], None if t[1] is None else t[0] + t[1])
    ),
    st.tuples(st.sampled_from([None, 0.1, 0.5]), st.sampled_from([None, 0.0, 0.2])).map(
        lambda t: ss.on_change("loss", rel=t[0], abs=t[1])
    ),
)
policies = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda t: t[0] | t[1]),
        st.tuples(inner, inner).map(lambda t: t[0] & t[1]),
    ),
    max_leaves=4,
)

offers = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.booleans(),
        st.one_of(st.floats(-2, 2), st.sampled_from([math.nan, math.inf, 1.0])),
    ),
    min_size=1,
    max_size=60,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(policy=policies, offered=offers, per_call=st.booleans())
def test_policy_matches_reference_model(tmp_path_factory, policy, offered, per_call):
    store = tmp_path_factory.mktemp("pol")
    # allow_rewind: increments of 0 offer a key twice at one step
    run = ss.init("policies", store=store, allow_rewind=True, **FAST)
    if not per_call:
        run.policy("g*", policy)
    hist, latest, expected = History(), {}, []
    step, epoch = 0, 0
    for increment, next_epoch, loss in offered:
        step += increment
        epoch += int(next_epoch)
        latest["loss"] = loss
        if ref_accept(policy, step, epoch, hist, latest):
            expected.append(step)
            hist.count += 1
            hist.last_step, hist.last_epoch = step, epoch
            for trigger in triggers(policy):
                hist.refs[trigger] = latest[trigger]
        run.log({"loss": loss, "g": 1.0}, step=step, epoch=epoch, when=policy if per_call else None)
    run.finish()
    view = ss.open(store).run(run.id)
    got = view.scalars("g")["step"].tolist() if "g" in view.keys() else []
    assert got == expected
    if not per_call:
        info = view.capture["keys"]["g"]
        assert info == {
            "policy": repr(policy),
            "recorded": len(expected),
            "skipped": len(offered) - len(expected),
        }


def test_a_refused_log_does_not_count_as_a_change(new_run, store_path):
    run = new_run()
    run.policy("grad", ss.on_change("lr"))
    run.log({"lr": 0.1, "grad": 1.0}, step=0)
    with pytest.raises(ss.InvalidValueError, match="key 'bad'"):
        run.log({"lr": 0.5, "grad": 2.0, "bad": "not a number"}, step=1)
    run.log({"grad": 3.0}, step=2)  # lr is still 0.1: the refused 0.5 never happened
    run.log({"lr": 0.5, "grad": 4.0}, step=3)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.scalars("grad")["step"].tolist() == [0, 3]
    assert view.scalars("lr")["step"].tolist() == [0, 3]


def test_on_change_records_significant_loss_moves(new_run, store_path):
    run = new_run()
    run.policy("loss", ss.on_change("loss", rel=0.1))
    for value in [1.0, 0.95, 0.91, 0.85, 0.84, 0.5, math.nan, math.nan, 0.5]:
        run.log({"loss": value})
    run.finish()
    df = ss.open(store_path).run(run.id).scalars("loss")
    assert df["step"].tolist() == [0, 3, 5, 6, 8]


def test_every_epoch_keeps_first_point_per_epoch(new_run, store_path):
    run = new_run()
    run.policy("*", ss.every_epoch())
    for step in range(12):
        run.log({"x": float(step)}, epoch=step // 4)
    run.finish()
    df = ss.open(store_path).run(run.id).scalars("x")
    assert df["step"].tolist() == [0, 4, 8]
    assert df["epoch"].tolist() == [0, 1, 2]


def test_log_spaced_is_dense_early_sparse_late():
    assert [next_mark(2, s) for s in (-1, 0, 1, 2, 3, 4, 7, 8)] == [0, 1, 2, 4, 4, 8, 8, 16]
    from stepstore.policies import log_spaced_marks

    assert log_spaced_marks(2, 70) == [0, 1, 2, 4, 8, 16, 32, 64, 128]
    assert log_spaced_marks(1.5, 20)[:9] == [0, 1, 2, 3, 5, 8, 12, 18, 27]


def test_later_binding_wins_and_rebinds_existing_keys(new_run, store_path):
    run = new_run()
    run.policy("grad/*", ss.every(2))
    run.log({"grad/a": 1.0}, step=0)
    run.log({"grad/a": 1.0}, step=1)
    run.policy("grad/a", ss.at(3))
    for step in (2, 3, 4):
        run.log({"grad/a": 1.0, "grad/b": 2.0}, step=step)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.scalars("grad/a")["step"].tolist() == [0, 3]
    assert view.scalars("grad/b")["step"].tolist() == [2, 4]
    assert view.capture["bindings"] == [
        {"pattern": "grad/*", "policy": "every(2)"},
        {"pattern": "grad/a", "policy": "at(3)"},
    ]


def test_policies_are_immutable_and_printable():
    policy = (ss.every(10) | ss.at(3, 1)) & ss.window(0, 100)
    assert repr(policy) == "((every(10) | at(1, 3)) & window(0, 100))"
    with pytest.raises(AttributeError, match="immutable"):
        policy.a = ss.every(1)
    assert ss.every(3) == ss.every(3) and hash(ss.every(3)) == hash(ss.every(3))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ss.every(0), r"every\(n\)=0: expected an integer >= 1"),
        (lambda: ss.every(2.5), r"every\(n\)=2.5: expected an integer >= 1"),
        (lambda: ss.at(), r"at\(\): expected at least one step"),
        (lambda: ss.at(-1), r"at\(step\)=-1: expected an integer >= 0"),
        (lambda: ss.log_spaced(1), r"log_spaced\(base=1\): expected a number > 1"),
        (lambda: ss.first(0), r"first\(n\)=0"),
        (lambda: ss.window(5, 5), r"window\(stop\)=5: expected an integer >= 6"),
        (lambda: ss.on_change(""), r"on_change\(key=''\): expected a non-empty key name"),
        (lambda: ss.on_change("loss", rel=-1), r"on_change\(rel=-1\): expected a number >= 0"),
        (lambda: ss.every(2) | 3, r"cannot combine a policy with 3 using '\|'"),
    ],
)
def test_bad_policy_arguments_name_the_problem(make, message):
    with pytest.raises(ss.InvalidArgumentError, match=message):
        make()
