"""TensorBoard import and export, checked against TensorBoard's own reader (EventAccumulator):
TB -> stepstore -> TB, value by value, bit for bit; damaged files; idempotence; bad input."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import stepstore as ss
from stepstore.cli import main
from stepstore.errors import MissingDependencyError
from stepstore.io.tensorboard_export import export_tensorboard
from stepstore.io.tensorboard_import import SKIPPED_KEY, import_tensorboard
from stepstore.io.tfrecord import frame, masked_crc, read_records

pytest.importorskip("tensorboard")
torch = pytest.importorskip("torch")
from tensorboard.backend.event_processing import event_accumulator as ea  # noqa: E402
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

SPECIAL = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, 3.4e38, -2.5]
ALL = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0, ea.TENSORS: 0, ea.COMPRESSED_HISTOGRAMS: 0}


def write_logdir(root: Path) -> Path:
    """A log dir as torch's SummaryWriter writes it: run ``train`` (scalars with NaN/inf,
    histograms, images, text) and its hparams run ``train/hp``."""
    rng = np.random.default_rng(7)
    with SummaryWriter(str(root / "train")) as writer:
        for step in range(300):
            writer.add_scalar("loss", float(rng.standard_normal()) * 10, step)
            writer.add_scalar("special", SPECIAL[step % len(SPECIAL)], step)
        for step in (0, 10, 20):
            writer.add_histogram("weights/fc", rng.standard_normal(500) * (step + 1), step)
        writer.add_image("samples/rgb", rng.integers(0, 256, (3, 7, 5), dtype=np.uint8), 3)
        writer.add_image("samples/rgb", rng.integers(0, 256, (3, 7, 5), dtype=np.uint8), 9)
        writer.add_image(
            "samples/gray", rng.integers(0, 256, (6, 4), dtype=np.uint8), 4, dataformats="HW"
        )
        writer.add_text("notes", "first *note*", 1)
        writer.add_text("notes", "zweite Notiz ✓", 8)
        writer.add_hparams(
            {"lr": 0.001, "batch": 64, "optimizer": "adam", "nesterov": True},
            {"hp/accuracy": 0.875, "hp/loss": 0.25},
            run_name="hp",
        )
    return root


def accumulate(directory: Path) -> ea.EventAccumulator:
    acc = ea.EventAccumulator(str(directory), size_guidance=ALL)
    acc.Reload()
    return acc


def only_subdir(root: Path, name: str) -> Path:
    (found,) = [p for p in root.rglob("*") if p.is_dir() and p.relative_to(root).as_posix() == name]
    return found


def bits(values: list[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float64).view(np.int64)


def assert_scalars_equal(a: ea.EventAccumulator, b: ea.EventAccumulator, tag: str) -> None:
    left, right = a.Scalars(tag), b.Scalars(tag)
    assert [e.step for e in left] == [e.step for e in right]
    assert np.array_equal(bits([e.value for e in left]), bits([e.value for e in right]))
    assert [round(e.wall_time * 1e6) for e in left] == [round(e.wall_time * 1e6) for e in right]


def assert_histograms_equal(a: ea.EventAccumulator, b: ea.EventAccumulator, tag: str) -> None:
    left, right = a.Histograms(tag), b.Histograms(tag)
    assert [e.step for e in left] == [e.step for e in right]
    for x, y in zip(left, right, strict=True):
        assert x.histogram_value == y.histogram_value  # every field, exactly


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


def texts(acc: ea.EventAccumulator, tag: str) -> list[tuple[int, list[str]]]:
    return [
        (e.step, [s.decode() for s in tensor_util.make_ndarray(e.tensor_proto).reshape(-1)])
        for e in acc.Tensors(tag)
    ]


def hparams(acc: ea.EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    content = acc.PluginTagToContent("hparams")
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(c) for tag, c in content.items()}


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    return write_logdir(tmp_path / "logs")


@pytest.fixture
def store(tmp_path: Path) -> ss.Store:
    ss.init("seed", store=tmp_path / "store").finish()  # creates the store
    return ss.open(tmp_path / "store")


def test_import_matches_event_accumulator_exactly(logdir: Path, store: ss.Store) -> None:
    done = import_tensorboard(logdir, store)
    assert [(d.directory, d.name, d.action, d.status) for d in done] == [
        ("train", "train", "imported", "finished"),
        ("train/hp", "train/hp", "imported", "finished"),
    ]
    acc = accumulate(logdir / "train")
    run = store.run("train")
    assert run.project == "logs"
    for tag in ("loss", "special"):
        events = acc.Scalars(tag)
        columns = run.columns(tag)
        assert columns.step.tolist() == [e.step for e in events]
        assert np.array_equal(columns.value.view(np.int64), bits([e.value for e in events]))
        assert columns.time.tolist() == [round(e.wall_time * 1e6) for e in events]
    histograms = acc.Histograms("weights/fc")
    counts = run.tensor("weights/fc/histogram")
    edges = run.tensor("weights/fc/histogram_edges")
    stats = run.tensor("weights/fc/histogram_stats")
    assert counts.steps.tolist() == [0, 10, 20]
    for event in histograms:
        h = event.histogram_value
        assert counts.at(event.step).tolist() == list(h.bucket)
        assert edges.at(event.step)[1:].tolist() == list(h.bucket_limit)
        assert stats.at(event.step).tolist() == [h.min, h.max, h.num, h.sum, h.sum_squares]
    for tag in ("samples/rgb", "samples/gray"):
        ours = run.images(tag)
        theirs = acc.Images(tag)
        assert [i.step for i in ours] == [e.step for e in theirs]
        for mine, event in zip(ours, theirs, strict=True):
            assert np.array_equal(mine.array, pixels(event.encoded_image_string))
    records = run.records("notes/text_summary")
    assert records["step"].tolist() == [1, 8]
    assert records["text"].tolist() == ["first *note*", "zweite Notiz ✓"]
    hp = store.run("train/hp")
    assert hp.params == {"lr": 0.001, "batch": 64.0, "optimizer": "adam", "nesterov": True}
    assert hp.records("hparams").to_dict("records") == [
        {"step": 0, "metrics": ["hp/accuracy", "hp/loss"], "status": "STATUS_SUCCESS"}
    ]
    assert hp.columns("hp/accuracy").value.tolist() == [0.875]


def test_round_trip_tensorboard_stepstore_tensorboard(
    logdir: Path, store: ss.Store, tmp_path: Path
) -> None:
    import_tensorboard(logdir, store)
    out = tmp_path / "exported"
    _, files = export_tensorboard(store.runs(project="logs"), store.backend, out)
    assert [f.parent.relative_to(out).as_posix() for f in files] == ["train", "train/hp"]
    before, after = accumulate(logdir / "train"), accumulate(out / "train")
    assert sorted(after.Tags()["scalars"]) == sorted(before.Tags()["scalars"])
    for tag in before.Tags()["scalars"]:
        assert_scalars_equal(before, after, tag)
    assert after.Tags()["histograms"] == ["weights/fc"]
    assert_histograms_equal(before, after, "weights/fc")
    for tag in ("samples/rgb", "samples/gray"):
        left, right = before.Images(tag), after.Images(tag)
        assert [(e.step, e.width, e.height) for e in left] == [
            (e.step, e.width, e.height) for e in right
        ]
        for x, y in zip(left, right, strict=True):
            assert np.array_equal(pixels(x.encoded_image_string), pixels(y.encoded_image_string))
    assert texts(after, "notes/text_summary") == texts(before, "notes/text_summary")
    assert after.Tensors("notes/text_summary")[0].wall_time == pytest.approx(
        before.Tensors("notes/text_summary")[0].wall_time, abs=1e-6
    )
    hp_before, hp_after = accumulate(logdir / "train" / "hp"), accumulate(out / "train" / "hp")
    assert hparams(hp_after) == hparams(hp_before)
    assert_scalars_equal(hp_before, hp_after, "hp/accuracy")
    # and once more through stepstore: nothing changes
    again = ss.open(tmp_path / "store")
    import_tensorboard(out, again, project="again")
    twice = tmp_path / "twice"
    export_tensorboard(again.runs(project="again"), again.backend, twice)
    for tag in before.Tags()["scalars"]:
        assert_scalars_equal(before, accumulate(twice / "train"), tag)


def test_export_of_a_stepstore_run_keeps_float64_and_histogram_reductions(
    store_path: Path, tmp_path: Path
) -> None:
    with ss.init("native", name="net", params={"opt": {"lr": 0.1}}, store=store_path) as run:
        run.reduce("w", "histogram", bins=4)
        for step in range(3):
            run.log({"exact": 0.5 * step, "precise": 0.1 * step}, step=step)
            run.log({"w": np.arange(8, dtype=np.float32) * (step + 1)}, step=step)
        run.log_record("table", {"a": 1, "b": [1.5, None]}, step=2)
    store = ss.open(store_path)
    export_tensorboard(store.runs(), store.backend, tmp_path / "out")
    acc = accumulate(tmp_path / "out" / "net")
    assert [e.value for e in acc.Scalars("exact")] == [0.0, 0.5, 1.0]
    precise = [tensor_util.make_ndarray(e.tensor_proto).item() for e in acc.Tensors("precise")]
    assert precise == [0.0, 0.1, 0.2]  # float64 kept: these are not float32 values
    histogram = acc.Histograms("w")[2].histogram_value
    view = store.run("net")
    assert list(histogram.bucket) == view.tensor("w/histogram").at(2).tolist()
    assert list(histogram.bucket_limit) == view.tensor("w/histogram_edges").at(2)[1:].tolist()
    assert histogram.num == 8
    assert texts(acc, "table") == [(2, ['{"a": 1, "b": [1.5, null]}'])]
    session = hparams(acc)["_hparams_/session_start_info"].session_start_info
    assert session.hparams["opt.lr"].number_value == 0.1


def test_second_import_changes_nothing(logdir: Path, store: ss.Store) -> None:
    first = import_tensorboard(logdir, store)
    before = {v.id: v.summary for v in store.runs()}
    second = import_tensorboard(logdir, store)
    assert [(d.action, d.run_id) for d in second] == [("skipped", d.run_id) for d in first]
    assert {v.id: v.summary for v in store.runs()} == before


def damaged_copy(logdir: Path, tmp_path: Path, damage: str) -> tuple[Path, Path, int]:
    """A copy of the train run whose event file is damaged; returns the dir, the file and
    the offset of the damaged record."""
    target = tmp_path / "damaged"
    shutil.copytree(logdir / "train", target / "train", ignore=shutil.ignore_patterns("hp"))
    (file,) = (target / "train").glob("*tfevents*")
    data = bytearray(file.read_bytes())
    records = read_records(bytes(data))
    record = 100  # a scalar event in the middle
    start = int(records.starts[record])
    if damage == "truncate":
        data = data[: start + 3]
    else:
        data[start + 2] ^= 0x40
    file.write_bytes(bytes(data))
    return target, file, start - 12


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_file_imports_the_valid_part(
    logdir: Path, store: ss.Store, tmp_path: Path, damage: str
) -> None:
    target, file, offset = damaged_copy(logdir, tmp_path, damage)
    (done,) = import_tensorboard(target, store)
    assert done.status == "incomplete"
    relative = file.relative_to(target).as_posix()
    size = file.stat().st_size - offset
    expected = {
        "truncate": f"{size} bytes at offset {offset}: truncated: the file ends inside a record",
        "flip": f"{next(iter(read_records(file.read_bytes()).damage)).size} bytes at offset "
        f"{offset}: the record's data fails its CRC",
    }[damage]
    assert done.problems == [f"{relative}: {expected}"]
    run = store.run(done.run_id)
    assert run.status == "incomplete"
    assert run.records(SKIPPED_KEY).to_dict("records") == [
        {"step": 0, "file": relative, "what": expected}
    ]
    original = accumulate(logdir / "train")
    # record 0 is the file version; 1..600 the scalars; the truncation drops 100 onwards
    imported = len(run.columns("loss").step) + len(run.columns("special").step)
    assert imported == {"truncate": 99, "flip": 599}[damage]
    kept = run.columns("loss")
    steps = [e.step for e in original.Scalars("loss")]
    values = {e.step: e.value for e in original.Scalars("loss")}
    assert set(kept.step.tolist()) <= set(steps)
    assert all(values[s] == v for s, v in zip(kept.step.tolist(), kept.value.tolist(), strict=True))


def test_bad_length_crc_stops_the_file_there(tmp_path: Path) -> None:
    payloads = [b"one", b"two", b"three"]
    data = bytearray(b"".join(frame(p) for p in payloads))
    data[len(frame(b"one")) + 1] ^= 1  # the second record's length
    records = read_records(bytes(data))
    assert [records.record(i) for i in range(len(records))] == [b"one"]
    assert [str(d) for d in records.damage] == [
        f"{len(data) - 19} bytes at offset 19: the record length fails its CRC; the rest of "
        "the file cannot be framed"
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=60))
def test_tfrecord_round_trip_and_tensorboard_crc(payloads: list[bytes]) -> None:
    data = b"".join(frame(p) for p in payloads)
    records = read_records(data)
    assert [records.record(i) for i in range(len(records))] == payloads
    assert records.damage == []
    for p in payloads[:5]:
        assert masked_crc(p) == masked_crc32c(p)


def test_cli_import_reports_unsupported_tags_once_and_exports(tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path / "logs" / "a")) as writer:
        for step in range(3):
            writer.add_scalar("x", float(step), step)
            writer.add_audio("sound", torch.zeros(50), step, sample_rate=8000)
    store = str(tmp_path / "store")
    runner = CliRunner()
    result = runner.invoke(
        main, ["import", "tensorboard", str(tmp_path / "logs"), "--store", store]
    )
    assert result.exit_code == 0, result.output
    (file,) = (tmp_path / "logs" / "a").glob("*tfevents*")
    lines = result.output.splitlines()
    assert lines[0].startswith("imported a -> run a (")
    assert lines[0].endswith("): 3 values, incomplete")
    assert lines[1:] == [
        f"  skipped a/{file.name}: tag 'sound': audio summaries are not imported",
        "1 run(s) imported (1 incomplete), 0 already imported",
    ]
    again = runner.invoke(main, ["import", "tensorboard", str(tmp_path / "logs"), "--store", store])
    assert again.output.splitlines()[-1] == "0 run(s) imported (0 incomplete), 1 already imported"
    out = tmp_path / "out"
    exported = runner.invoke(
        main, ["export", "a", "--format", "tensorboard", "-o", str(out), "--store", store]
    )
    assert exported.output == f"wrote 4 events from 1 run(s) to {out} (tensorboard)\n"
    assert [e.value for e in accumulate(out / "a").Scalars("x")] == [0.0, 1.0, 2.0]


def test_cli_import_of_a_directory_without_event_files(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no events here")
    result = CliRunner().invoke(
        main, ["import", "tensorboard", str(tmp_path / "empty"), "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 1
    assert result.output == (
        f"error: LOGDIR {str(tmp_path / 'empty')!r}: no TensorBoard event files (names "
        "containing 'tfevents') in it or in any directory below it\n"
    )


def test_missing_tensorboard_names_the_extra(
    logdir: Path, store: ss.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'stepstore\[compat\]'"):
        import_tensorboard(logdir, store)


def test_log_and_log_record_take_a_wall_time(new_run) -> None:
    run = new_run()
    run.log({"x": 1.0}, step=0, time=1_600_000_000.1234567)
    run.log_record("r", {"a": 1}, step=0, time=1_600_000_001.5)
    with pytest.raises(ss.StepstoreError, match=r"time=nan: expected Unix seconds"):
        run.log({"x": 2.0}, step=1, time=float("nan"))
    with pytest.raises(ss.StepstoreError, match=r"time=-1: expected Unix seconds"):
        run.log_record("r", {"a": 2}, step=1, time=-1)
    run.finish()
    store = ss.open(run.store)
    assert store.run(run.id).columns("x").time.tolist() == [1_600_000_000_123_457]
    (series,) = [s for s in store.backend.series(run.id) if s.key == "r"]
    assert [r.time for r in store.backend.records(series.id)] == [1_600_000_001_500_000]
