"""Tensor series: exact round trips, step indexing, chunks, checksums, Zarr compatibility."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import stepstore as ss
from stepstore.backends import open_backend
from stepstore.io.copy import copy_runs
from stepstore.tensors import series_writer as sink
from stepstore.tensors.series import chunk_path
from stepstore.tensors.zarr_v3 import segment_document, shard_header_bytes

from .conftest import FAST

DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    dtype=st.sampled_from(DTYPES),
    shapes=st.lists(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), min_size=1, max_size=3),
    steps_per_shape=st.integers(1, 6),
    data=st.data(),
)
def test_any_dtype_and_shape_sequence_round_trips(
    tmp_path_factory, dtype, shapes, steps_per_shape, data
):
    store = tmp_path_factory.mktemp("t")
    run = ss.init("t", store=store, **FAST)
    logged = []
    step = 0
    for shape in shapes:
        for _ in range(steps_per_shape):
            array = data.draw(hnp.arrays(np.dtype(dtype), shape))
            run.log({"x": array}, step=step)
            logged.append((step, array.copy()))
            step += data.draw(st.integers(1, 3))
    run.finish()
    ts = ss.open(store).run(run.id).tensor("x")
    assert ts.steps.tolist() == [s for s, _ in logged]
    assert ts.dtype == np.dtype(dtype)
    for s, array in logged:
        assert same(ts.at(s), array)
    if len({a.shape for _, a in logged}) == 1:
        assert same(ts[:], np.stack([a for _, a in logged]))


def test_torch_dtypes_round_trip(new_run, store_path):
    torch = pytest.importorskip("torch")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    run = new_run()
    values = {
        "bf16": torch.tensor([1.5, -2.25, 3e38], dtype=torch.bfloat16),
        "f16": torch.tensor([0.1, 65504.0], dtype=torch.float16),
        "f32": torch.randn(3, 4),
        "i64": torch.arange(6).reshape(2, 3),
        "b": torch.tensor([True, False]),
        "grad": torch.ones(2, requires_grad=True) * 3,
        "strided": torch.arange(12.0).reshape(3, 4).t(),
    }
    run.log(values)
    run.finish()
    view = ss.open(store_path).run(run.id)
    for key, tensor in values.items():
        got = view.tensor(key).at(0)
        if key == "bf16":
            assert got.dtype == np.dtype(ml_dtypes.bfloat16)
            assert got.astype(np.float32).tolist() == tensor.float().tolist()
        else:
            assert np.array_equal(got, tensor.detach().numpy())
            assert got.dtype == tensor.detach().numpy().dtype


@pytest.fixture
def weights(new_run, store_path):
    run = new_run()
    rng = np.random.default_rng(0)
    logged = {}
    for step in range(0, 300, 3):
        w = rng.standard_normal((40, 30)).astype(np.float32)
        run.log({"w": w}, step=step)
        logged[step] = w
    run.finish()
    return ss.open(store_path).run(run.id).tensor("w"), logged


def test_first_index_is_step_numbers(weights):
    ts, logged = weights
    assert ts.shape == (100, 40, 30)
    assert len(ts) == 100
    assert same(ts[30], logged[30])
    assert same(ts.at(297), logged[297])
    assert same(ts[30:40], np.stack([logged[30], logged[33], logged[36], logged[39]]))
    assert same(ts[[60, 3, 60]], np.stack([logged[60], logged[3], logged[60]]))
    assert same(ts[:, 17, 5], np.array([logged[s][17, 5] for s in sorted(logged)]))
    assert same(ts[100:110, 2:4, ::7], np.stack([logged[s][2:4, ::7] for s in (102, 105, 108)]))
    assert ts[1000:2000].shape == (0, 40, 30)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (31, "step 31 was not recorded"),
        ([30, 31], "step 31 was not recorded"),
        (-3, "step -3 was not recorded"),
    ],
)
def test_missing_steps_raise_key_error_naming_them(weights, index, message):
    ts, _ = weights
    with pytest.raises(KeyError, match=message):
        ts[index]


def test_bad_first_index_is_explained(weights):
    ts, _ = weights
    with pytest.raises(ss.InvalidArgumentError, match="slices of steps take no stride"):
        ts[0:10:2]
    with pytest.raises(ss.InvalidArgumentError, match="the first index must be a step"):
        ts["a"]


def test_stats_and_xarray(weights):
    ts, logged = weights
    stats = ts.stats()
    assert stats["step"].tolist() == sorted(logged)
    w = logged[3].astype(np.float64)
    row = stats.set_index("step").loc[3]
    assert row["mean"] == pytest.approx(w.mean())
    assert row["max"] == w.max() and row["min"] == w.min()
    assert row["norm"] == pytest.approx(np.linalg.norm(w))
    xr = pytest.importorskip("xarray")
    array = ts.to_xarray()
    assert isinstance(array, xr.DataArray)
    assert array.sel(step=297).values.tolist() == logged[297].tolist()


def test_arrays_are_zarr_v3_readable(new_run, store_path):
    zarr = pytest.importorskip("zarr")
    run = new_run()
    rng = np.random.default_rng(1)
    dense = [rng.standard_normal((8, 5)).astype(np.float32) for _ in range(7)]
    sparse = [np.where(d > 1.0, d, 0).astype(np.float32) for d in dense]  # compresses well
    for step, (d, s) in enumerate(zip(dense, sparse, strict=True)):
        run.log({"dense": d, "sparse": s}, step=step * 10)
    run.finish()
    for key, logged in (("dense", dense), ("sparse", sparse)):
        group = zarr.open_group(store_path / "arrays" / run.id / key, mode="r")
        assert group["s0"].shape == (7, 8, 5)
        assert np.array_equal(group["s0"][:], np.stack(logged))
        assert group["steps"][:].tolist() == [i * 10 for i in range(7)]
    segments = ss.open(store_path).backend.tensor_index(
        next(s.id for s in ss.open(store_path).backend.series(run.id) if s.key == "sparse")
    )[0]
    assert segments[0].codec == "zstd"


def test_corrupted_chunk_names_its_file_and_others_still_read(new_run, store_path):
    run = new_run()
    rng = np.random.default_rng(2)  # incompressible 4 MB rows: raw chunks of 16 rows
    rows = [rng.standard_normal((1024, 1024)).astype(np.float32) for _ in range(40)]
    for step, row in enumerate(rows):
        run.log({"big": row}, step=step)
    run.finish()
    ts = ss.open(store_path).run(run.id).tensor("big")
    chunk = store_path / "arrays" / run.id / "big" / "s0" / "c" / "1" / "0" / "0"
    with open(chunk, "r+b") as handle:
        handle.seek(shard_header_bytes(16) + 3 * 4 * 1024 * 1024 + 100)
        handle.write(b"\xff\xff\xff\xff")
    with pytest.raises(ss.StoreError, match=rf"checksum mismatch in {chunk} \(row 3, step 19\)"):
        ts.at(19)
    assert same(ts.at(18), rows[18])
    assert same(ts.at(5), rows[5])
    assert same(ts[32:40], np.stack(rows[32:40]))
    problems = ss.open(store_path).check()
    assert [p.what for p in problems] == [f"checksum mismatch in {chunk} (row 3, step 19)"]


def test_corrupted_compressed_chunk_is_reported(new_run, store_path):
    run = new_run()
    for step in range(10):
        run.log({"z": np.zeros((64, 64), np.float32) + step}, step=step)
    run.finish()
    chunk = store_path / "arrays" / run.id / "z" / "s0" / "c" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[40] ^= 0x55  # early in the frame: the logged rows decode wrongly or not at all
    chunk.write_bytes(bytes(data))
    with pytest.raises(
        ss.StoreError,
        match=rf"tensor 'z': (checksum mismatch in {chunk} \(row 0|chunk file {chunk} does not)",
    ):
        ss.open(store_path).run(run.id).tensor("z").at(0)
    assert [p.where for p in ss.open(store_path).check()] == [f"run {run.id} key 'z'"]


def test_compressed_chunk_newer_than_its_index_still_verifies(new_run, store_path):
    # a flush rewrites the open zstd chunk before its index row is committed: a reader (or a
    # crash) in between sees more rows in the file than the index names; they still verify
    run = new_run()
    for step in range(3):
        run.log({"z": np.zeros((64, 64), np.float32) + step}, step=step)
    run.flush()
    ts = ss.open(store_path).run(run.id).tensor("z")
    for step in range(3, 6):
        run.log({"z": np.zeros((64, 64), np.float32) + step}, step=step)
    run.flush()
    assert ts.steps.tolist() == [0, 1, 2]
    assert ts.at(2).tolist() == np.full((64, 64), 2.0).tolist()
    assert ts.verify() == []
    run.finish()


def test_resumed_run_adds_a_segment(store_path):
    first = ss.init("t", store=store_path, **FAST)
    first.log({"w": np.arange(3.0)})
    first.finish()
    again = ss.init("t", store=store_path, resume=first.id, **FAST)
    again.log({"w": np.arange(3.0) + 1})
    again.finish()
    ts = ss.open(store_path).run(first.id).tensor("w")
    assert ts.steps.tolist() == [0, 1]
    assert ts[:].tolist() == [[0, 1, 2], [1, 2, 3]]


def test_memory_fsspec_array_store(store_path):
    pytest.importorskip("fsspec")
    run = ss.init("t", store=store_path, array_store="memory://stepstore-test", **FAST)
    run.log({"w": np.arange(6).reshape(2, 3)})
    run.log({"img": ss.Image(np.zeros((4, 4), np.uint8))})
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.tensor("w").at(0).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert view.images("img")[0].array.shape == (4, 4)


def test_reductions(new_run, store_path):
    run = new_run()
    run.reduce("acts/*", "stats")
    run.reduce("hist", "histogram", bins=4)
    run.reduce("half", dtype="float16")
    run.reduce("few", sample=5)
    data = np.array([[0.0, 1.0], [2.0, -3.0]], np.float32)
    big = np.arange(100, dtype=np.float64)
    for step in range(3):
        run.log({"acts/a": data + step, "hist": data, "half": data / 3, "few": big + step})
    run.finish()
    view = ss.open(store_path).run(run.id)
    stats = view.scalars("acts/a/*")
    mean = stats[stats["key"] == "acts/a/mean"]
    assert mean["value"].tolist() == [0.0, 1.0, 2.0]
    assert stats[stats["key"] == "acts/a/zeros"]["value"].tolist() == [0.25, 0.0, 0.0]
    assert "acts/a" not in view.keys()
    assert view.tensor("hist/histogram").at(1).tolist() == [1, 0, 1, 2]
    assert view.tensor("hist/histogram_edges").at(1).tolist() == [-3.0, -1.75, -0.5, 0.75, 2.0]
    half = view.tensor("half")
    assert (
        half.dtype == np.float16 and half.at(0).tolist() == (data / 3).astype(np.float16).tolist()
    )
    index = view.tensor("few/sample_index").at(0)
    assert len(index) == 5 and index.tolist() == sorted(index.tolist())
    assert view.tensor("few").at(2).tolist() == (big[index] + 2).tolist()
    assert view.capture["reductions"][0] == {
        "pattern": "acts/*",
        "how": "stats",
        "dtype": None,
        "sample": None,
    }


def test_bad_reduction_arguments(new_run):
    run = new_run()
    with pytest.raises(ss.InvalidArgumentError, match=r"reduce='mean': expected one of None"):
        run.reduce("x", "mean")
    with pytest.raises(ss.InvalidArgumentError, match=r"dtype='int8': expected None or"):
        run.reduce("x", dtype="int8")
    with pytest.raises(ss.InvalidArgumentError, match=r"sample=0: expected an integer >= 1"):
        run.reduce("x", sample=0)


def test_budget_thins_to_log_spaced_steps(new_run, store_path):
    run = new_run()
    run.budget(4000, keys="acts/*")
    with pytest.warns(
        RuntimeWarning,
        match=r"keys 'acts/\*' used 4096 of their 4000-byte "
        r"budget at step 3; recording them at log-spaced",
    ):
        for step in range(40):
            run.log({"acts/x": np.zeros(128, np.float64), "other": np.zeros(128)}, step=step)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.tensor("acts/x").steps.tolist() == [0, 1, 2, 3, 4, 8, 16, 32]
    assert len(view.tensor("other").steps) == 40
    assert view.capture["budgets"] == [
        {"keys": "acts/*", "bytes": 4000, "used": 8192, "thinned_at": 3}
    ]


def test_records_and_artifacts(new_run, store_path, tmp_path):
    run = new_run()
    run.log_record("eval/samples", {"text": "hello", "score": 0.5, "tags": ["a"]}, step=3)
    run.log_record("eval/samples", {"text": "bye", "score": float("nan"), "extra": None}, step=7)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights" * 1000)
    assert run.log_artifact(checkpoint) == "model.pt"
    run.finish()
    view = ss.open(store_path).run(run.id)
    records = view.records("eval/samples")
    assert records["step"].tolist() == [3, 7]
    assert records["text"].tolist() == ["hello", "bye"]
    assert records["tags"].iloc[0] == ["a"]
    import hashlib

    info = view.artifacts()["model.pt"]
    assert info["size"] == 7000
    assert info["sha256"] == hashlib.sha256(b"weights" * 1000).hexdigest()
    assert view.artifact("model.pt") == b"weights" * 1000


def test_bad_records_and_artifacts(new_run, tmp_path):
    run = new_run()
    with pytest.raises(ss.InvalidValueError, match=r"key 'r': record is not JSON-serialisable"):
        run.log_record("r", {"x": object()})
    with pytest.raises(ss.InvalidValueError, match=r"key 'r': record \[1\] is not a dict"):
        run.log_record("r", [1])
    with pytest.raises(ss.InvalidArgumentError, match=r"not a file"):
        run.log_artifact(tmp_path / "missing.pt")


def test_unsupported_dtype_and_kind_errors(new_run, store_path):
    run = new_run()
    with pytest.raises(
        ss.InvalidValueError,
        match=r"key 'c': tensors of dtype complex128 are "
        r"not supported",
    ):
        run.log({"c": np.zeros(2, complex)})
    run.log({"w": np.zeros(2)})
    run.finish()
    view = ss.open(store_path).run(run.id)
    with pytest.raises(
        ss.KindMismatchError,
        match=r"key 'w' holds tensor values; read it with "
        r"\.tensor\('w'\)",
    ):
        view.scalars("w")
    with pytest.raises(ss.NotFoundError, match=r"has no tensor key 'nope'; tensor keys: w"):
        view.tensor("nope")


def _sizes(tree: Path) -> tuple[int, int]:
    """Apparent and allocated bytes of the files under ``tree``."""
    infos = [p.stat() for p in tree.rglob("*") if p.is_file()]
    return sum(i.st_size for i in infos), sum(i.st_blocks * 512 for i in infos)


def test_raw_chunk_files_take_the_room_they_hold(new_run, store_path, monkeypatch):
    monkeypatch.setattr(sink, "RAW_CHUNK_BYTES", 1 << 20)  # 16 rows of 64 KiB a chunk
    run = new_run()
    rng = np.random.default_rng(5)
    big = [rng.standard_normal(16_384).astype(np.float32) for _ in range(40)]
    small = [rng.standard_normal((8, 5)).astype(np.float32) for _ in range(30)]
    for step in range(40):
        run.log({"big": big[step], **({"small": small[step]} if step < 30 else {})}, step=step)
    run.finish()
    arrays = store_path / "arrays" / run.id
    apparent, allocated = _sizes(arrays)
    assert abs(apparent - allocated) <= 0.1 * allocated, (apparent, allocated)
    big_chunks = arrays / "big" / "s0" / "c"
    assert [(big_chunks / str(c) / "0").stat().st_size for c in range(3)] == [
        shard_header_bytes(16) + 16 * 65_536,
        shard_header_bytes(16) + 16 * 65_536,
        shard_header_bytes(16) + 8 * 65_536,
    ]
    small_chunk = arrays / "small" / "s0" / "c" / "0" / "0" / "0"
    assert small_chunk.stat().st_size == shard_header_bytes(4096) + 30 * 160
    view = ss.open(store_path).run(run.id)
    assert same(view.tensor("big")[:], np.stack(big))
    assert same(view.tensor("small")[:], np.stack(small))
    assert view.tensor("big").verify() == [] and view.tensor("small").verify() == []
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(arrays / "big", mode="r")
    assert np.array_equal(group["s0"][:], np.stack(big))
    assert np.array_equal(group["s0"][30:34, 7], np.array([r[7] for r in big[30:34]]))


def _make_old_style(store_path: Path, run_id: str, key: str) -> list[Path]:
    """Rewrite a series the way stores before the ``"rows"`` codec held it: each chunk's rows
    at the start of a file pre-sized (sparse) to the whole chunk, codec ``"raw"``; returns
    the chunk files."""
    with ss.open(store_path) as store:
        (series,) = [s for s in store.backend.series(run_id) if s.key == key]
        segments, chunks = store.backend.tensor_index(series.id)
    files = []
    for segment in segments:
        row_bytes = int(np.prod(segment.shape)) * np.dtype(segment.dtype).itemsize
        for chunk in (c for c in chunks if c.segment == segment.segment):
            path = store_path / "arrays" / chunk_path(segment, chunk)
            rows = path.read_bytes()[shard_header_bytes(segment.chunk_steps) :]
            with open(path, "wb") as handle:
                handle.write(rows)
                handle.truncate(segment.chunk_steps * row_bytes)
            files.append(path)
        rows_logged = sum(c.count for c in chunks if c.segment == segment.segment)
        old = dataclasses.replace(segment, codec="raw")
        document = segment_document(old, rows_logged, 0)
        (store_path / "arrays" / segment.path / "zarr.json").write_bytes(document)
    with contextlib.closing(sqlite3.connect(store_path / "stepstore.db")) as db:
        db.execute("UPDATE tensor_segments SET codec = 'raw' WHERE series_id = ?", (series.id,))
        db.commit()
    return files


def test_a_resumed_run_adds_to_an_old_style_sparse_series(store_path):
    rng = np.random.default_rng(6)
    rows = [rng.standard_normal((4, 8)) for _ in range(12)]
    first = ss.init("t", store=store_path, **FAST)
    for step in range(7):
        first.log({"w": rows[step]}, step=step)
    first.finish()
    (old_file,) = _make_old_style(store_path, first.id, "w")
    assert old_file.stat().st_size == 4096 * 256 > old_file.stat().st_blocks * 512
    old_bytes = old_file.read_bytes()
    again = ss.init("t", store=store_path, resume=first.id, **FAST)
    for step in range(7, 12):
        again.log({"w": rows[step]}, step=step)
    again.finish()
    with ss.open(store_path) as store:
        ts = store.run(first.id).tensor("w")
        assert ts.steps.tolist() == list(range(12))
        assert same(ts[:], np.stack(rows))
        assert same(ts[3:9, 2], np.stack([r[2] for r in rows[3:9]]))
        assert ts.verify() == [] and store.check() == []
        (series,) = [s for s in store.backend.series(first.id) if s.key == "w"]
        assert [s.codec for s in store.backend.tensor_index(series.id)[0]] == ["raw", "rows"]
    assert old_file.read_bytes() == old_bytes
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(store_path / "arrays" / first.id / "w", mode="r")
    assert np.array_equal(group["s0"][:], np.stack(rows[:7]))
    assert np.array_equal(group["s1"][:], np.stack(rows[7:]))


def test_raw_chunks_copied_to_an_object_store_read_back(new_run, store_path, tmp_path):
    pytest.importorskip("fsspec")
    run = new_run()
    rng = np.random.default_rng(7)
    rows = [rng.standard_normal((3, 50)) for _ in range(9)]
    for step, row in enumerate(rows):
        run.log({"w": row}, step=step * 2)
    run.finish()
    target_uri = str(tmp_path / "copy")
    with ss.open(store_path) as source, ss.Store(open_backend(target_uri, create=True)) as target:
        copy_runs(source, target, array_store="memory://stepstore-rows-copy")
    with ss.open(target_uri) as target:
        ts = target.run(run.id).tensor("w")
        assert same(ts[:], np.stack(rows))
        assert same(ts[[4, 16], 1], np.stack([rows[2][1], rows[8][1]]))
        assert ts.verify() == []


def test_a_raw_chunk_file_cut_short_names_its_end(new_run, store_path):
    run = new_run()
    rng = np.random.default_rng(8)
    rows = [rng.standard_normal(32) for _ in range(6)]
    for step, row in enumerate(rows):
        run.log({"w": row}, step=step)
    run.finish()
    chunk = store_path / "arrays" / run.id / "w" / "s0" / "c" / "0" / "0"
    with open(chunk, "r+b") as handle:
        handle.truncate(shard_header_bytes(4096) + 4 * 256 + 10)  # rows 0-3 whole, 4 torn
    ts = ss.open(store_path).run(run.id).tensor("w")
    assert same(ts[0:4], np.stack(rows[:4]))
    for read in (lambda: ts[0:6, 3], lambda: ts.at(4), lambda: ts.stats()):
        with pytest.raises(ss.StoreError, match=rf"tensor 'w': chunk file {chunk} ends in row 4"):
            read()
    assert [p.what for p in ss.open(store_path).check()] == [f"chunk file {chunk} ends in row 4"]
