"""The flight ring, the triggers and the flight recorder (stepstore.tensors.flight, .flight)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from stepstore.errors import (
    FlightBudgetError,
    InvalidArgumentError,
    InvalidValueError,
    StepOrderError,
)
from stepstore.flight import DUMP, FlightEvent, FlightRecorder, FlightWrite, flight_writes
from stepstore.policies import every, on_change, on_exception, on_nan
from stepstore.tensors.flight import FlightRing

NAN, INF = math.nan, math.inf


def value(step: int, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    return (step + np.arange(np.prod(shape)).reshape(shape)).astype(np.float32)


# -- the ring ----------------------------------------------------------------------------


def test_a_ring_not_yet_full_drains_what_it_holds_in_step_order() -> None:
    ring = FlightRing(4)
    for step in (3, 5, 6):
        ring.put("a", step, 1, 100.0 + step, value(step))
    drained = ring.drain()
    assert list(drained) == ["a"]
    series = drained["a"]
    assert series.steps.tolist() == [3, 5, 6]
    assert series.epochs == (1, 1, 1)
    assert series.times.tolist() == [103.0, 105.0, 106.0]
    np.testing.assert_array_equal(series.values, np.stack([value(s) for s in (3, 5, 6)]))
    assert series.values.dtype == np.float32


def test_a_ring_wraps_around_keeping_the_last_k_steps() -> None:
    ring = FlightRing(3)
    for step in range(10):
        ring.put("a", step, step // 4, float(step), value(step))
        ring.put("b", step, None, float(step), np.int64(step) * np.ones(2, dtype=np.int64))
    drained = ring.drain()
    assert list(drained) == ["a", "b"]
    assert drained["a"].steps.tolist() == [7, 8, 9]
    assert drained["a"].epochs == (1, 2, 2)
    np.testing.assert_array_equal(drained["a"].values, np.stack([value(s) for s in (7, 8, 9)]))
    np.testing.assert_array_equal(drained["b"].values, [[7, 7], [8, 8], [9, 9]])
    assert drained["b"].epochs == (None, None, None)


def test_drain_empties_the_ring_and_the_slots_are_reused() -> None:
    ring = FlightRing(2)
    for step in range(5):
        ring.put("a", step, None, 0.0, value(step))
    first = ring.drain()
    assert ring.drain() == {}
    ring.put("a", 7, None, 0.0, value(7))
    second = ring.drain()
    assert second["a"].steps.tolist() == [7]
    np.testing.assert_array_equal(second["a"].values, value(7)[None])
    np.testing.assert_array_equal(first["a"].values, np.stack([value(3), value(4)]))  # a copy


def test_a_value_copies_the_array_it_was_given() -> None:
    ring = FlightRing(2)
    array = value(0)
    ring.put("a", 0, None, 0.0, array)
    array[:] = -1
    np.testing.assert_array_equal(ring.drain()["a"].values[0], value(0))


def test_a_second_value_at_the_newest_step_replaces_the_first() -> None:
    ring = FlightRing(3)
    ring.put("a", 0, None, 0.0, value(0))
    ring.put("a", 1, None, 1.0, value(1))
    ring.put("a", 1, None, 2.0, value(10))
    series = ring.drain()["a"]
    assert series.steps.tolist() == [0, 1]
    assert series.times.tolist() == [0.0, 2.0]
    np.testing.assert_array_equal(series.values[1], value(10))


def test_a_step_below_the_newest_is_refused() -> None:
    ring = FlightRing(3)
    ring.put("a", 5, None, 0.0, value(5))
    with pytest.raises(StepOrderError, match=r"'a': step 4 is below its newest step 5"):
        ring.put("a", 4, None, 0.0, value(4))


def test_another_shape_or_dtype_names_the_key_the_expected_and_the_got() -> None:
    ring = FlightRing(3)
    ring.put("acts", 0, None, 0.0, value(0))
    with pytest.raises(
        InvalidValueError,
        match=r"'acts': expected shape \(2, 3\) float32 as at its first step, got \(3, 3\) "
        r"float32 at step 1",
    ):
        ring.put("acts", 1, None, 0.0, value(1, (3, 3)))
    with pytest.raises(InvalidValueError, match=r"expected shape \(2, 3\) float32 .* float64"):
        ring.put("acts", 1, None, 0.0, value(1).astype(np.float64))
    with pytest.raises(InvalidValueError, match=r"'x': expected a NumPy array or a torch tensor"):
        ring.put("x", 0, None, 0.0, [1.0, 2.0])
    assert ring.drain()["acts"].steps.tolist() == [0]  # the refused values left nothing


def test_arguments_are_checked() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidArgumentError, match=r"steps=.*expected an integer >= 1"):
            FlightRing(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"budget=0"):
        FlightRing(2, budget=0)


def test_the_budget_names_the_largest_keys_before_allocating() -> None:
    ring = FlightRing(32, budget=1 << 20)  # 1 MiB
    ring.reserve({"small": 100, "weights/big": 16 << 10, "weights/mid": 8 << 10})  # 776 KiB
    message = (
        r"a flight ring of 32 steps of 4 keys needs 2\.0 GiB, over its budget of 1\.0 MiB; "
        r"largest: activations/huge \(64\.0 MiB a step, 2\.0 GiB\)"
    )
    # ... and counted before the slots of the key exist
    with pytest.raises(FlightBudgetError, match=message) as info:
        ring.put("activations/huge", 0, None, 0.0, np.zeros((4, 4, 1 << 20), np.float32))
    assert "weights/big (16.0 KiB a step, 512.0 KiB), weights/mid (8.0 KiB a step" in str(
        info.value
    )
    assert str(info.value).index("weights/mid") < str(info.value).index("small")
    assert isinstance(info.value, InvalidArgumentError)
    assert ring.keys == ["small", "weights/big", "weights/mid"]
    with pytest.raises(FlightBudgetError, match=r"4 keys needs 1\.5 MiB.*weights/more"):
        ring.reserve({"weights/more": 24 << 10})
    assert ring.nbytes == 32 * (100 + (24 << 10))  # nothing was reserved by the refused call


def test_a_reserved_key_must_come_with_its_reserved_size() -> None:
    ring = FlightRing(2)
    ring.reserve({"w": 24})
    with pytest.raises(InvalidValueError, match=r"'w': expected 24 bytes a step as reserved"):
        ring.put("w", 0, None, 0.0, np.zeros(4, np.float32))
    ring.put("w", 0, None, 0.0, np.zeros(3, np.float64))
    assert ring.drain()["w"].values.shape == (1, 3)


def test_torch_tensors_are_held_on_the_host_or_their_device() -> None:
    torch = pytest.importorskip("torch")
    for device in (False, True):
        ring = FlightRing(2, device=device)
        weight = torch.ones(3, requires_grad=True)
        for step in range(3):
            ring.put("t", step, None, 0.0, weight * step)
            ring.put("h", step, None, 0.0, torch.full((2,), step, dtype=torch.bfloat16))
        drained = ring.drain()
        np.testing.assert_array_equal(drained["t"].values, [[1, 1, 1], [2, 2, 2]])
        assert drained["t"].values.dtype == np.float32
        assert drained["h"].values.dtype == torch.bfloat16  # NumPy has none: a CPU tensor
        assert drained["h"].values.tolist() == [[1, 1], [2, 2]]
    with pytest.raises(InvalidValueError, match=r"torch.float32 .* torch.float64"):
        ring.put("t", 3, None, 0.0, torch.zeros(3, dtype=torch.float64))


# -- triggers ------------------------------------------------------------------------------


def fire_sequence(trigger: Any, values: list[dict[str, Any]]) -> list[Any]:
    fire = trigger.arm()
    return [fire(v, None) for v in values]


def test_on_nan_fires_once_per_blow_up_of_a_scalar() -> None:
    losses = [1.0, NAN, NAN, 2.0, INF, -INF]
    got = fire_sequence(on_nan("loss"), [{"loss": v} for v in losses] + [{"acc": 1.0}])
    assert got == [None, ("loss", "loss is NaN"), None, None, ("loss", "loss is inf"), None, None]
    assert on_nan("loss").triggers == frozenset({"loss"})


def test_on_nan_reads_arrays_and_tensors() -> None:
    fire = on_nan("g").arm()
    assert fire({"g": np.array([1.0, 2.0])}, None) is None
    assert fire({"g": np.array([1, 2])}, None) is None  # integers are always finite
    bad = np.array([[NAN, 1.0], [INF, NAN]])
    assert fire({"g": bad}, None) == ("g", "g has 2 NaN and 1 inf of 4 values")
    torch = pytest.importorskip("torch")
    fire = on_nan("t").arm()
    assert fire({"t": torch.tensor(0.5)}, None) is None
    assert fire({"t": torch.tensor([1.0, INF])}, None) == ("t", "t has 1 inf of 2 values")
    assert fire({"t": torch.tensor(NAN)}, None) is None  # still not finite: no new firing


def test_on_nan_as_a_capture_policy_records_while_the_key_is_not_finite() -> None:
    latest: dict[str, float] = {}
    check = on_nan("loss").compile(latest)
    assert not check(0, None, None)  # type: ignore[arg-type]
    for loss, expected in ((0.5, False), (NAN, True), (-INF, True), (0.1, False)):
        latest["loss"] = loss
        assert check(0, None, None) is expected  # type: ignore[arg-type]


def test_on_change_fires_against_the_previous_value() -> None:
    values = [{"loss": v} for v in (1.0, 1.05, 1.2, 1.2, 3.0, NAN)]
    got = fire_sequence(on_change("loss", rel=0.1), values)
    assert got == [
        None,
        None,
        ("loss", "loss changed from 1.05 to 1.2"),
        None,
        ("loss", "loss changed from 1.2 to 3"),
        ("loss", "loss changed from 3 to nan"),
    ]
    with pytest.raises(InvalidValueError, match=r"trigger key 'loss': expected a scalar"):
        on_change("loss").arm()({"loss": np.zeros(3)}, None)


def test_on_exception_fires_on_an_error_only() -> None:
    fire = on_exception().arm()
    assert fire({"loss": NAN}, None) is None
    assert fire({}, RuntimeError("out of memory")) == (None, "RuntimeError: out of memory")
    assert on_exception().triggers == frozenset()
    assert not on_exception().compile({})(0, None, None)  # type: ignore[arg-type]
    assert repr(on_exception()) == "on_exception()" and on_exception() == on_exception()


def test_combined_triggers() -> None:
    either = on_nan("loss") | on_change("acc", abs=0.5)
    assert either.triggers == frozenset({"loss", "acc"})
    got = fire_sequence(either, [{"loss": 1.0, "acc": 0.1}, {"loss": 1.0, "acc": 0.9}])
    assert got == [None, ("acc", "acc changed from 0.1 to 0.9")]
    both = on_nan("loss") & on_change("acc", abs=0.5)
    got = fire_sequence(
        both, [{"loss": 1.0, "acc": 0.1}, {"loss": NAN, "acc": 0.2}, {"loss": 1.0, "acc": 0.2}]
    )
    assert got == [None, None, None]
    got = fire_sequence(both, [{"loss": 1.0, "acc": 0.1}, {"loss": NAN, "acc": 0.9}])
    assert got == [None, ("loss", "loss is NaN and acc changed from 0.1 to 0.9")]


def test_a_capture_policy_is_no_trigger() -> None:
    with pytest.raises(InvalidArgumentError, match=r"every\(5\): a capture policy, not a trigger"):
        every(5).arm()
    with pytest.raises(InvalidArgumentError, match=r"not a trigger"):
        (on_nan("loss") | every(5)).arm()
    with pytest.raises(InvalidArgumentError, match=r"on_nan\(key=''\)"):
        on_nan("")


# -- the recorder --------------------------------------------------------------------------


def run_steps(recorder: FlightRecorder, steps: range, loss: Any = 1.0) -> list[Any]:
    events = []
    for step in steps:
        recorder.observe(step, 0, float(step), "acts/a", value(step))
        events.append(recorder.check(step, {"loss": loss(step) if callable(loss) else loss}))
    return events


def test_a_trigger_returns_an_event_and_dump_drains_the_window() -> None:
    recorder = FlightRecorder("acts/*", steps=4, trigger=on_nan("loss"), after=2)
    events = run_steps(recorder, range(10), loss=lambda s: NAN if s == 6 else 1.0)
    event = FlightEvent("on_nan('loss')", 6, "loss", "loss is NaN at step 6")
    assert events == [None] * 6 + [event] + [None] * 3
    dumped, drained = recorder.dump(event)
    assert dumped == event
    assert drained["acts/a"].steps.tolist() == [6, 7, 8, 9]  # dumped late: the ring went on


def test_after_m_steps_are_recorded_raw_not_held_and_do_not_fire() -> None:
    recorder = FlightRecorder(["acts/*", "grads/*"], steps=3, trigger=on_nan("loss"), after=2)
    for step in range(5):
        recorder.observe(step, 0, 0.0, "acts/a", value(step))
        event = recorder.check(step, {"loss": NAN if step == 4 else 1.0})
    assert event is not None and event.step == 4
    _, drained = recorder.dump(event)
    assert drained["acts/a"].steps.tolist() == [2, 3, 4]
    raw = [
        (step, recorder.recording_after("acts/a", step), recorder.recording_after("x", step))
        for step in range(3, 9)
    ]
    assert raw == [
        (3, False, False),
        (4, True, False),
        (5, True, False),
        (6, True, False),
        (7, False, False),
        (8, False, False),
    ]
    for step in range(5, 9):  # a new blow-up inside the window does not fire
        recorder.observe(step, 0, 0.0, "acts/a", value(step))
        assert recorder.check(step, {"loss": NAN if step < 7 else 1.0}) is None
    assert recorder.ring.drain()["acts/a"].steps.tolist() == [7, 8]  # 5 and 6 went raw


def test_a_tensor_trigger_fires_from_observe() -> None:
    recorder = FlightRecorder("acts/*", steps=2, trigger=on_nan("acts/a"))
    assert recorder.observe(0, None, 0.0, "acts/a", value(0)) is None
    bad = value(1)
    bad[0, 0] = NAN
    event = recorder.observe(1, None, 0.0, "acts/a", bad)
    assert event == FlightEvent(
        "on_nan('acts/a')", 1, "acts/a", "acts/a has 1 NaN of 6 values at step 1"
    )
    _, drained = recorder.dump(event)
    assert drained["acts/a"].steps.tolist() == [0, 1]
    assert np.isnan(drained["acts/a"].values[1, 0, 0])


def test_explicit_dumps_and_exceptions() -> None:
    recorder = FlightRecorder("acts/*", steps=2, trigger=on_exception(), after=1)
    run_steps(recorder, range(3))
    event, drained = recorder.dump("checkpoint looked odd")
    assert event == FlightEvent(DUMP, 2, None, "checkpoint looked odd")
    assert drained["acts/a"].steps.tolist() == [1, 2]
    assert recorder.exception(ValueError("bad batch")) == FlightEvent(
        "on_exception()", 2, None, "ValueError: bad batch"
    )
    plain = FlightRecorder("acts/*", steps=2)
    assert plain.exception(ValueError("x")) is None
    assert plain.check(0, {"loss": NAN}) is None


def test_trigger_keys_never_logged_are_named_at_finish() -> None:
    recorder = FlightRecorder("acts/*", steps=2, trigger=on_nan("loss") | on_nan("val/loss"))
    run_steps(recorder, range(2))
    assert recorder.unseen_triggers() == ["val/loss"]
    with pytest.warns(RuntimeWarning, match=r"run x: flight trigger .* reads key 'val/loss'"):
        recorder.warn_unseen("run x")


def test_selection_and_arguments() -> None:
    recorder = FlightRecorder(["activations/*", "activations"], steps=2)
    assert recorder.selects("activations") and recorder.selects("activations/fc/0")
    assert not recorder.selects("gradients/fc.weight")
    with pytest.raises(InvalidArgumentError, match=r"keys=\[\]: expected a glob"):
        FlightRecorder([], steps=2)
    with pytest.raises(InvalidArgumentError, match=r"trigger='loss': expected a trigger"):
        FlightRecorder("a", steps=2, trigger="loss")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"every\(2\): a capture policy"):
        FlightRecorder("a", steps=2, trigger=every(2))
    with pytest.raises(InvalidArgumentError, match=r"after=-1"):
        FlightRecorder("a", steps=2, after=-1)
    with pytest.raises(InvalidArgumentError, match=r"attached to no run"):
        recorder.fire(recorder.event("x"))


def test_attach_hands_the_recorder_to_the_run() -> None:
    persisted: list[FlightEvent] = []

    class Host:
        def _add_flight(self, recorder: FlightRecorder, fed: bool) -> Any:
            self.recorder, self.fed = recorder, fed
            return persisted.append

    host, recorder = Host(), FlightRecorder("a", steps=2)
    recorder.attach(host, fed=True)
    assert host.recorder is recorder and host.fed
    recorder.fire(recorder.event("why"))
    assert persisted == [FlightEvent(DUMP, 0, None, "why")]


# -- writes --------------------------------------------------------------------------------


def test_flight_writes_go_step_by_step_and_skip_recorded_steps() -> None:
    ring = FlightRing(3)
    for step in range(2, 6):
        ring.put("b", step, 0, float(step), value(step))
        if step % 2:
            ring.put("a", step, 1, step + 0.5, value(step, (1,)))
    drained = ring.drain()
    writes = flight_writes(drained)
    assert [(w.key, w.step, w.epoch, w.time) for w in writes] == [
        ("b", 3, 0, 3.0),
        ("a", 3, 1, 3.5),
        ("b", 4, 0, 4.0),
        ("b", 5, 0, 5.0),
        ("a", 5, 1, 5.5),
    ]
    assert all(isinstance(w, FlightWrite) for w in writes)
    np.testing.assert_array_equal(writes[1].value, value(3, (1,)))
    skipped = flight_writes(drained, recorded={"b": 4})
    assert [(w.key, w.step) for w in skipped] == [("a", 3), ("b", 5), ("a", 5)]


# -- the run: run.flight, dump_flight, exceptions, events ------------------------------------


def acts(step: int) -> np.ndarray:
    return np.arange(4, dtype=np.float32) + step


def logs_until_nan(run: Any, steps: int, nan_at: int, **log: Any) -> None:
    for step in range(steps):
        loss = NAN if step == nan_at else 1.0 / (step + 1)
        values = {"loss": loss, "acts/a": acts(step), "acts/b": -acts(step), "other": acts(step)}
        run.log(values, step=step, epoch=step // 4, **log)


def test_a_nan_keeps_the_last_k_steps_at_their_steps_and_the_next_m_raw(tmp_path: Any) -> None:
    import stepstore as ss

    store = tmp_path / "s"
    run = ss.init("flight", store=store, flush_interval=0.05)
    run.policy("acts/*", every(100)).policy("other", every(100))
    recorder = run.flight("acts/*", steps=3, trigger=on_nan("loss"), after=2)
    assert isinstance(recorder, FlightRecorder) and recorder.trigger == on_nan("loss")
    logs_until_nan(run, 12, nan_at=7)
    run.finish()

    view = ss.open(store).run(run.id)
    kept = [0, 5, 6, 7, 8, 9]  # every(100)'s step 0, the ring's 5..7, then 8 and 9 raw
    for key, sign in (("acts/a", 1), ("acts/b", -1)):
        series = view.tensor(key)
        assert series.steps.tolist() == kept, key
        for step in kept:
            np.testing.assert_array_equal(series.at(step), sign * acts(step))
        assert series.at(7).dtype == np.float32
    assert view.tensor("other").steps.tolist() == [0]  # not selected
    epochs = view.tensor("acts/a").epochs()  # the epochs they were logged with
    assert epochs.tolist() == [step // 4 for step in kept]
    assert view.scalars("loss")["step"].tolist() == list(range(12))
    (event,) = view.events()
    assert (event.step, event.trigger, event.key, event.reason, event.rank) == (
        7,
        "on_nan('loss')",
        "loss",
        "loss is NaN at step 7",
        0,
    )
    assert run.capture_info()["keys"]["acts/a"]["recorded"] == len(kept)


def test_a_firing_step_the_policy_records_is_stored_once(tmp_path: Any) -> None:
    import stepstore as ss

    run = ss.init("flight", store=tmp_path / "s", flush_interval=0.05)
    run.policy("acts/*", on_nan("loss"))  # records the step the trigger fires at, too
    run.flight("acts/a", steps=4, trigger=on_nan("loss"))
    logs_until_nan(run, 8, nan_at=5)
    run.finish()
    view = ss.open(tmp_path / "s").run(run.id)
    series = view.tensor("acts/a")
    assert series.steps.tolist() == [2, 3, 4, 5]
    np.testing.assert_array_equal(series[2:6], np.stack([acts(s) for s in range(2, 6)]))
    assert view.tensor("acts/b").steps.tolist() == [5]


def test_dump_flight_keeps_the_ring_with_its_reason(tmp_path: Any) -> None:
    import stepstore as ss

    run = ss.init("flight", store=tmp_path / "s", flush_interval=0.05)
    run.policy("acts/*", every(100))
    run.flight(["acts/b"], steps=2)
    logs_until_nan(run, 5, nan_at=99)
    run.dump_flight("the validation loss looked odd")
    with pytest.raises(InvalidArgumentError, match=r"reason=3: expected a string"):
        run.dump_flight(3)  # type: ignore[arg-type]
    run.finish()
    view = ss.open(tmp_path / "s").run(run.id)
    assert view.tensor("acts/b").steps.tolist() == [0, 3, 4]
    assert view.tensor("acts/a").steps.tolist() == [0]
    assert [(e.step, e.trigger, e.key, e.reason) for e in view.events()] == [
        (4, DUMP, None, "the validation loss looked odd")
    ]


def test_an_exception_ending_the_with_block_keeps_the_ring(tmp_path: Any) -> None:
    import stepstore as ss

    run = ss.init("flight", store=tmp_path / "s", flush_interval=0.05)
    with pytest.raises(RuntimeError, match="CUDA out of memory"), run:
        run.policy("acts/*", every(100))
        run.flight("acts/a", steps=2, trigger=on_exception())
        logs_until_nan(run, 6, nan_at=99)
        raise RuntimeError("CUDA out of memory")
    view = ss.open(tmp_path / "s").run(run.id)
    assert view.status == "crashed"
    assert view.tensor("acts/a").steps.tolist() == [0, 4, 5]
    assert [(e.step, e.trigger, e.key, e.reason) for e in view.events()] == [
        (5, "on_exception()", None, "RuntimeError: CUDA out of memory")
    ]


def test_an_uncaught_exception_keeps_the_ring_before_the_run_is_crashed(tmp_path: Any) -> None:
    from .conftest import run_python

    store = tmp_path / "s"
    result = run_python(
        """
        import sys
        import numpy as np
        import stepstore as ss
        run = ss.init("flight", store=sys.argv[1], flush_interval=0.05)
        run.policy("acts/*", ss.every(100))
        run.flight("acts/*", steps=2, trigger=ss.on_exception() | ss.on_nan("loss"))
        for step in range(4):
            run.log({"loss": 1.0, "acts/a": np.full(3, step, np.float32)}, step=step)
        print(run.id)
        raise ValueError("bad batch")
        """,
        str(store),
    )
    assert "ValueError: bad batch" in result.stderr
    import stepstore as ss

    view = ss.open(store).run(result.stdout.strip())
    assert view.status == "crashed"
    assert view.tensor("acts/a").steps.tolist() == [0, 2, 3]
    np.testing.assert_array_equal(view.tensor("acts/a").at(3), np.full(3, 3, np.float32))
    (event,) = view.events()
    assert (event.step, event.key, event.reason) == (3, None, "ValueError: bad batch")
    assert event.trigger == "(on_exception() | on_nan('loss'))"


def test_a_trigger_on_a_key_never_logged_warns_at_finish(tmp_path: Any) -> None:
    import stepstore as ss

    run = ss.init("flight", store=tmp_path / "s", flush_interval=0.05)
    run.flight("acts/*", steps=2, trigger=on_nan("loss") | on_nan("val/loss"))
    logs_until_nan(run, 2, nan_at=99)
    message = rf"run {run.name} \({run.id}\): flight trigger .* reads key 'val/loss', which was"
    with pytest.warns(RuntimeWarning, match=message):
        run.finish()


def test_the_budget_of_a_run_flight_is_checked_at_a_keys_first_value(tmp_path: Any) -> None:
    import stepstore as ss

    run = ss.init("flight", store=tmp_path / "s", flush_interval=0.05)
    run.flight("acts/*", steps=10, budget=200)
    with pytest.raises(FlightBudgetError, match=r"10 steps of 2 keys needs 320 B.*acts/b"):
        run.log({"acts/a": acts(0), "acts/b": np.zeros(4, np.float32)})
    with pytest.raises(InvalidArgumentError, match=r"steps=0"):
        run.flight("acts/*", steps=0)
    run.finish()
    with pytest.raises(ss.RunStateError, match="cannot record"):
        run.flight("acts/*", steps=2)
    with pytest.raises(ss.RunStateError, match="cannot record"):
        run.dump_flight("late")


def test_a_value_of_another_shape_is_recorded_but_not_held_with_one_warning(
    tmp_path: Any,
) -> None:
    import stepstore as ss

    run = ss.init("flight", store=tmp_path / "s", flush_interval=0.05)
    run.policy("acts/*", every(100))
    run.flight("acts/*", steps=4)
    run.log({"acts/a": acts(0)}, step=0)
    with pytest.warns(
        RuntimeWarning, match=r"'acts/a': expected shape \(4,\) float32 .*; not held"
    ):
        run.log({"acts/a": np.zeros(2, np.float32)}, step=1)
    run.log({"acts/a": np.zeros(2, np.float32)}, step=2)  # no second warning
    run.log({"acts/a": acts(3)}, step=3)
    run.dump_flight("look")
    run.finish()
    assert ss.open(tmp_path / "s").run(run.id).tensor("acts/a").steps.tolist() == [0, 3]
