"""A call that raises records none of its values, and bad input never escapes the error
tree: values NumPy can hold but a scalar series cannot, steps past 2**63-1, a key logged
twice at one step, artifact names that are not file names."""

from __future__ import annotations

import errno
import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import stepstore as ss
from stepstore.tensors.location import ArrayLocation


def fail_chunk_files(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make opening tensor chunk files fail (a full disk) while the returned event is set."""
    failing = threading.Event()
    failing.set()
    real_open = ArrayLocation.open_chunk

    def open_chunk(self: ArrayLocation, path: str) -> int:
        if failing.is_set():
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real_open(self, path)

    monkeypatch.setattr(ArrayLocation, "open_chunk", open_chunk)
    return failing


def test_a_log_refused_by_a_failing_array_writer_records_none_of_its_values(
    new_run, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = fail_chunk_files(monkeypatch)
    run = new_run()
    logged, refused = [], 0
    deadline = time.monotonic() + 20
    while not refused and time.monotonic() < deadline:
        step = run.step
        try:
            run.log({"loss": float(step), "w": np.full(3, step, np.float32)})
        except ss.WriterError as exc:
            assert "No space left on device (injected)" in str(exc)
            assert run.step == step  # the step did not move on either
            refused += 1
        else:
            logged.append(step)
        time.sleep(0.005)
    assert refused, "the array writer never reported its failure"
    failing.clear()
    run.flush()  # retries the failed job, now that the disk has room
    run.log({"loss": float(run.step), "w": np.full(3, run.step, np.float32)})  # the retry
    logged.append(logged[-1] + 1)
    run.finish()
    view = ss.open(store_path).run(run.id)
    frame = view.scalars("loss")
    assert frame["step"].tolist() == logged
    assert frame["value"].tolist() == [float(s) for s in logged]
    tensor = view.tensor("w")
    assert list(tensor.steps) == logged
    for step in logged:
        np.testing.assert_array_equal(tensor.at(step), np.full(3, step, np.float32))


@pytest.mark.parametrize(
    "value",
    [
        np.datetime64("2024-01-01"),
        np.timedelta64(5, "s"),
        np.void(b"ab"),
        np.complex64(1 + 2j),
        np.array(np.datetime64("2024-01-01")),
    ],
    ids=["datetime64", "timedelta64", "void", "complex", "0-d datetime64 array"],
)
def test_scalars_numpy_holds_but_a_series_cannot_are_refused(new_run, value) -> None:
    run = new_run()
    with pytest.raises(ss.InvalidValueError, match=r"key 'when': cannot record .*dtype"):
        run.log({"when": value, "loss": 1.0})
    run.log({"loss": 2.0})  # the run goes on, from the step the refused call would have taken
    assert run.step == 1


def test_an_automatic_step_past_the_largest_is_refused(new_run, store_path: Path) -> None:
    run = new_run()
    run.log({"loss": 1.0}, step=2**63 - 1)
    with pytest.raises(ss.InvalidArgumentError, match=r"next automatic step 9223372036854775808"):
        run.log({"other": 1.0})
    with pytest.raises(ss.InvalidArgumentError, match=r"next automatic step"):
        run.log_record("notes", {"a": 1})
    run.finish()
    assert ss.open(store_path).run(run.id).scalars("loss")["step"].tolist() == [2**63 - 1]


def test_a_key_takes_one_value_per_step(new_run, store_path: Path) -> None:
    run = new_run()
    run.log({"x": 1.0, "w": np.zeros(2)}, step=7)
    run.log_record("r", {"a": 1}, step=7)
    for values in ({"x": 2.0}, {"w": np.ones(2)}):
        with pytest.raises(ss.StepOrderError, match=r"step 7 is at its last recorded step 7"):
            run.log(values, step=7)
    with pytest.raises(ss.StepOrderError, match=r"key 'r': step 7 is at its last recorded step"):
        run.log_record("r", {"a": 2}, step=7)
    with pytest.raises(ss.StepOrderError, match=r"step 6 is below its last recorded step 7"):
        run.log({"x": 2.0}, step=6)
    run.log({"x": 3.0, "y": 1.0}, step=8)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.scalars("x")[["step", "value"]].values.tolist() == [[7, 1.0], [8, 3.0]]
    assert view.records("r")["a"].tolist() == [1]


def test_allow_rewind_accepts_a_key_twice_at_one_step(new_run, store_path: Path) -> None:
    run = new_run(allow_rewind=True)
    run.log({"x": 1.0}, step=7)
    run.log({"x": 2.0}, step=7)
    run.finish()
    assert ss.open(store_path).run(run.id).scalars("x")["value"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a\0b", "contains control character"),
        ("dir/file", "without '/'"),
        ("dir\\file", "without '/'"),
        ("..", "not '.' or '..'"),
        (".", "not '.' or '..'"),
        ("x" * 256, "longer than 255 characters"),
        (" lead", "without leading or trailing whitespace"),
        ("", "expected a non-empty name"),
        (7, "expected a string, got int"),
    ],
)
def test_bad_artifact_names_are_refused_and_the_run_goes_on(
    new_run, store_path: Path, tmp_path: Path, name: object, expected: str
) -> None:
    source = tmp_path / "model.pt"
    source.write_bytes(b"weights")
    run = new_run()
    run.log({"w": np.arange(4.0)}, step=0)
    with pytest.raises(ss.InvalidArgumentError, match=rf"artifact name .*{expected}"):
        run.log_artifact(source, name=name)  # type: ignore[arg-type]
    run.log({"w": np.arange(4.0) + 1}, step=1)
    assert run.log_artifact(source, name="Model.PT") == "Model.PT"
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.status == "finished"
    np.testing.assert_array_equal(view.tensor("w")[0:2], [np.arange(4.0), np.arange(4.0) + 1])
    assert list(view.artifacts()) == ["Model.PT"]
    assert view.artifact("Model.PT") == b"weights"


def test_repeat_lets_a_key_take_more_values_at_its_last_step_only(
    new_run, store_path: Path
) -> None:
    run = new_run()
    run.log({"act": np.zeros(2)}, step=3)
    run.log({"act": np.ones(2)}, step=3, repeat=True)  # a second forward of step 3
    with pytest.raises(ss.StepOrderError, match=r"step 2 is below its last recorded step 3"):
        run.log({"act": np.ones(2)}, step=2, repeat=True)
    run.finish()
    series = ss.open(store_path).run(run.id).tensor("act")
    assert series.steps.tolist() == [3, 3]
    np.testing.assert_array_equal(series.at(3), np.ones(2))


def test_an_artifact_whose_file_is_deleted_right_away_is_stored_and_blocks_nothing(
    new_run, store_path: Path, tmp_path: Path
) -> None:
    source = tmp_path / "ckpt.pt"
    source.write_bytes(b"\x00checkpoint\xff" * 1000)
    run = new_run()
    run.log_artifact(source)
    source.unlink()  # e.g. a checkpoint rotated away before the writer copied it
    run.log({"w": np.arange(3.0)}, step=0)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.artifact("ckpt.pt") == b"\x00checkpoint\xff" * 1000
    np.testing.assert_array_equal(view.tensor("w").at(0), np.arange(3.0))


def test_a_refused_log_record_leaves_the_key_and_the_run_where_they_were(
    new_run, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = fail_chunk_files(monkeypatch)
    run = new_run()
    run.log_record("notes", {"a": 1}, step=4)
    run.log({"w": np.zeros(2)}, step=4)  # its chunk file cannot be opened: the writer fails
    deadline = time.monotonic() + 20
    for probe in itertools.count():
        try:
            run.log_record(f"probe/{probe}", {"a": 0}, step=0)
        except ss.WriterError:
            break
        assert time.monotonic() < deadline, "the array writer never reported its failure"
        time.sleep(0.01)
    with pytest.raises(ss.WriterError, match="injected"):
        run.log_record("notes", {"a": 2}, step=5)
    assert run.step == 5
    failing.clear()
    run.flush()
    run.log_record("notes", {"a": 2}, step=5)  # the retry is not a step below the last
    run.finish()
    assert ss.open(store_path).run(run.id).records("notes")[["step", "a"]].values.tolist() == [
        [4, 1],
        [5, 2],
    ]
