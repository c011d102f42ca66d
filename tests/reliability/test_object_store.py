"""The object-store path, for real: ``array_store="s3://..."`` against a local S3 server.

moto's S3 runs in server mode on 127.0.0.1 (see ``tests/s3_server.py``) and s3fs reaches it
the way a user's does, through ``AWS_ENDPOINT_URL_S3`` and credentials in the environment.
Tensors, images and artifacts round trip exactly, ``stepstore check`` verifies them and finds
a damaged object, ``copy`` moves runs between local and S3-backed stores, and a network that
goes away mid-run loses nothing ``log()`` accepted.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import stepstore as ss
from stepstore.backends import open_backend
from stepstore.cli import main
from stepstore.errors import WriterError
from stepstore.io import copy_runs
from stepstore.repair import repair
from stepstore.tensors import location

from ..backend_fixtures import SERVERS
from ..conftest import run_python
from ..s3_server import Bucket, S3Server, require_s3

FAST = {"flush_interval": 0.2}
#: Logged values by key: (step, array) in the order logged.
Logged = dict[str, list[tuple[int, np.ndarray]]]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """One S3 server for the module (skipped, or failed, without moto and s3fs)."""
    require_s3()
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """An empty bucket on the server, with the environment pointing s3fs at it."""
    import fsspec
    import s3fs

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delitem(fsspec.config.conf, "s3", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # instances keep the endpoint they started with
    yield s3_server.bucket()
    s3fs.S3FileSystem.clear_instance_cache()


class Recorder:
    """Logs into a run and remembers the tensors ``log()`` accepted and those of calls it
    refused (with ``WriterError``)."""

    def __init__(self, run: ss.Run) -> None:
        self.run = run
        self.tensors: Logged = {}
        self.refused: Logged = {}

    def log(self, step: int, values: dict[str, np.ndarray]) -> bool:
        """Log ``values`` at ``step``; whether ``log()`` accepted them."""
        try:
            self.run.log(values, step=step)
        except WriterError:
            accepted = False
        else:
            accepted = True
        kept = self.tensors if accepted else self.refused
        for key, value in values.items():
            kept.setdefault(key, []).append((step, np.array(value, copy=True)))
        return accepted


def record_everything(run: ss.Run, tmp_path: Path) -> Recorder:
    """Tensors of several dtypes and shapes (a shape and a dtype change, a series longer than
    one chunk), images and an artifact; the run is finished."""
    rng = np.random.default_rng(10)
    recorder = Recorder(run)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-310, 1.0])
    for step in range(10):
        recorder.log(
            step,
            {
                "w/f64": np.concatenate([special, rng.standard_normal(6)]).reshape(4, 3),
                "w/f32": rng.standard_normal((2, 3) if step < 5 else (5,)).astype(np.float32),
                "w/i8": rng.integers(-128, 128, 7).astype(np.int8),
                "w/u16": rng.integers(0, 1 << 16, (3, 3)).astype(np.uint16),
                "w/bool": rng.integers(0, 2, 4).astype(bool),
                "w/mixed": np.arange(3, dtype=np.int16 if step < 4 else np.float64) * step,
                "w/f16": rng.standard_normal((2, 2)).astype(np.float16),
            },
        )
    for step in range(260):  # more rows than one chunk holds (256 of 64 KiB)
        recorder.log(step, {"long": np.full(1 << 14, step, np.float32)})
    run.log({"img/gray": ss.Image(rng.integers(0, 256, (8, 6)).astype(np.uint8))}, step=0)
    run.log({"img/gray": ss.Image(np.zeros((8, 6), np.uint8))}, step=3)
    rgb = rng.integers(0, 256, (5, 4, 3)).astype(np.uint8)
    run.log({"img/rgb": ss.Image(rgb, caption="colour")}, step=2)
    checkpoint = tmp_path / "checkpoint.bin"
    checkpoint.write_bytes(rng.bytes(50_000))
    run.log_artifact(checkpoint)
    run.finish()
    return recorder


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_tensors(view: ss.RunView, logged: Logged) -> None:
    """Every logged tensor reads back with its step, dtype, shape and bytes."""
    for key, rows in logged.items():
        series = view.tensor(key)
        assert series.steps.tolist() == [step for step, _ in rows], key
        for step, array in rows:
            assert same(series.at(step), array), (key, step)


def assert_same_arrays(copied: ss.RunView, original: ss.RunView) -> None:
    """Two runs hold the same tensors, images and artifacts."""
    assert copied.keys() == original.keys()
    for key in original.keys("tensor"):
        logged = original.tensor(key)
        assert_tensors(copied, {key: [(int(s), logged.at(int(s))) for s in logged.steps]})
    for key in original.keys("image"):
        for a, b in zip(copied.images(key), original.images(key), strict=True):
            assert (a.step, a.caption) == (b.step, b.caption)
            assert same(a.array, b.array)
    assert copied.artifact("checkpoint.bin") == original.artifact("checkpoint.bin")


def test_tensors_images_and_artifacts_round_trip_through_s3(s3, tmp_path):
    store = tmp_path / "store"
    run = ss.init("s3", store=store, array_store=s3.url(), **FAST)
    recorder = record_everything(run, tmp_path)
    view = ss.open(store).run(run.id)
    assert_tensors(view, recorder.tensors)
    gray, later = view.images("img/gray")
    assert (gray.step, later.step, gray.array.shape) == (0, 3, (8, 6))
    (rgb,) = view.images("img/rgb")
    assert (rgb.step, rgb.caption, rgb.array.shape) == (2, "colour", (5, 4, 3))
    data = (tmp_path / "checkpoint.bin").read_bytes()
    assert view.artifact("checkpoint.bin") == data
    assert view.artifacts()["checkpoint.bin"]["path"].startswith(f"{s3.url()}/{run.id}/")
    assert len(s3.keys(f"arrays/{run.id}/long/s0/c/")) == 2  # the arrays are in the bucket
    assert not list((store / "arrays").rglob("*.png"))


def test_postgresql_metadata_with_s3_arrays(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("STEPSTORE_JOURNAL_DIR", str(tmp_path / "journals"))
    monkeypatch.setenv("STEPSTORE_ARRAY_STORE", s3.url("team"))
    with SERVERS["postgresql"].database() as uri:
        run = ss.init("s3", store=uri, **FAST)
        recorder = Recorder(run)
        for step in range(20):
            recorder.log(step, {"w": np.full((3, 2), step / 3), "ids": np.arange(step + 1)})
        run.log({"img": ss.Image(np.eye(4))}, step=5)
        run.finish()
        with ss.open(uri) as store:
            assert_tensors(store.run(run.id), recorder.tensors)
            assert store.run(run.id).images("img")[0].array.max() == 255
            assert store.check() == []
    assert s3.keys(f"team/{run.id}/")


def check_json(store: Path, *args: str) -> tuple[int, dict]:
    """``stepstore check --json`` of ``store``: exit code and document."""
    result = CliRunner().invoke(main, ["check", "--json", "--store", str(store), *args])
    return result.exit_code, json.loads(result.output)


def test_check_verifies_s3_objects_and_finds_a_damaged_one(s3, tmp_path):
    store = tmp_path / "store"
    run = ss.init("s3", store=store, array_store=s3.url(), **FAST)
    recorder = record_everything(run, tmp_path)
    assert check_json(store) == (0, {"ok": True, "problems": []})
    chunk = next(k for k in s3.keys(f"arrays/{run.id}/w%2Fi8/s0/") if "/c/" in k)
    s3.put(chunk, b"\x00" * len(s3.get(chunk)))
    image = next(k for k in s3.keys(f"arrays/{run.id}/") if k.endswith(".png"))
    png = bytearray(s3.get(image))
    png[-20] ^= 0xFF
    s3.put(image, bytes(png))
    code, document = check_json(store)
    assert code == 1 and not document["ok"]
    damaged = " ".join(f"{p['where']}: {p['what']}" for p in document["problems"])
    assert "'w/i8'" in damaged and chunk.removeprefix("arrays/") in damaged
    assert "'img/" in damaged and "checksum mismatch" in damaged
    code, document = check_json(store, "--repair")
    assert code == 0 and document["ok"] and len(document["repaired"]) >= 2
    view = ss.open(store).run(run.id)
    assert len(view.tensor("w/i8")) == 0  # its only chunk was dropped; the rest is intact
    assert_tensors(view, {k: v for k, v in recorder.tensors.items() if k != "w/i8"})


def test_copy_moves_runs_between_local_and_s3_stores(s3, tmp_path):
    laptop, cloud, back = tmp_path / "laptop", tmp_path / "cloud", tmp_path / "back"
    run = ss.init("s3", store=laptop, **FAST)
    record_everything(run, tmp_path)
    with ss.open(laptop) as source, ss.Store(open_backend(str(cloud), create=True)) as target:
        results = copy_runs(source, target, array_store=s3.url("shared"))
        assert [(r.run_id, r.action) for r in results] == [(run.id, "copied")]
        assert [r.action for r in copy_runs(source, target)] == ["skipped"]
    assert not (cloud / "arrays" / run.id).exists()
    keys = s3.keys(f"shared/{run.id}/")
    local = sorted(p for p in (laptop / "arrays" / run.id).rglob("*") if p.is_file())
    assert len(keys) == len(local)
    with ss.open(laptop) as source, ss.open(cloud) as target:
        assert target.run(run.id).artifacts()["checkpoint.bin"]["path"].startswith("s3://")
        assert_same_arrays(target.run(run.id), source.run(run.id))
    result = CliRunner().invoke(main, ["copy", "--from", str(cloud), "--to", str(back)])
    assert result.exit_code == 0, result.output
    assert (back / "arrays" / run.id).is_dir()
    with ss.open(laptop) as source, ss.open(back) as copied:
        assert_same_arrays(copied.run(run.id), source.run(run.id))
        assert copied.check() == []


def flush_until_it_works(run: ss.Run, seconds: float = 30) -> None:
    """``run.flush()``, retried while it reports the writer's (past) failure."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            run.flush()
            return
        except WriterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def fail_fast(monkeypatch: pytest.MonkeyPatch, timeout: float | None = None) -> None:
    """Make botocore and s3fs try a request once (with ``timeout``: give up on a server that
    does not answer after that many seconds), so an outage reaches the writer at once; the
    defaults ride out seconds of it."""
    import fsspec
    import s3fs

    config: dict[str, Any] = {"retries": {"total_max_attempts": 1}}
    if timeout is not None:
        config.update(connect_timeout=timeout, read_timeout=timeout)
        monkeypatch.setattr(location, "WRITE_TIMEOUT", timeout)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"config_kwargs": config})
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)


def test_network_outage_mid_run_loses_nothing_logged(s3_server, s3, tmp_path, monkeypatch):
    fail_fast(monkeypatch)
    store = tmp_path / "store"
    run = ss.init("s3", store=store, array_store=s3.url(), on_error="warn", **FAST)
    recorder = Recorder(run)
    rng = np.random.default_rng(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # on_error="warn": the outage
        for step in range(20):
            recorder.log(step, {"w": rng.standard_normal((4, 4)), "b": rng.integers(0, 9, 3)})
        run.flush()
        with s3_server.link.down():  # log() may wait for the writer, and then refuse
            for step in range(20, 23):  # a new key and a new shape
                fresh = rng.standard_normal(5).astype(np.float32)
                recorder.log(step, {"w": rng.standard_normal((2, 8)), "fresh": fresh})
            with pytest.raises(WriterError):
                run.flush()
        flush_until_it_works(run)
        for step in range(30, 40):
            fresh = rng.standard_normal(5).astype(np.float32)
            assert recorder.log(step, {"w": rng.standard_normal((2, 8)), "fresh": fresh})
        run.finish()
    with ss.open(store) as opened:
        assert_tensors(opened.run(run.id), recorder.tensors)
        assert opened.check() == []


def test_a_refused_log_records_none_of_its_values(s3_server, s3, tmp_path, monkeypatch):
    fail_fast(monkeypatch, timeout=1)
    store = tmp_path / "store"
    run = ss.init("s3", store=store, array_store=s3.url(), on_error="warn", **FAST)
    recorder = Recorder(run)
    recorder.log(0, {"w": np.zeros(4)})
    run.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with s3_server.link.down(hang=True):
            recorder.log(1, {"first": np.ones(3)})  # a new key: its write hangs for 1 s
            time.sleep(0.2)  # the writer is in that write, the queue is empty
            recorder.log(2, {"w": np.full(4, 2.0), "second": np.ones(2)})  # queued
            recorder.log(3, {"w": np.full(4, 3.0), "third": np.ones(2)})  # waits, refused
        flush_until_it_works(run)
    run.finish()
    assert [step for step, _ in recorder.refused["w"]] == [3]
    assert_tensors(ss.open(store).run(run.id), recorder.tensors)


def test_repair_while_the_store_does_not_answer_drops_nothing(s3_server, s3, tmp_path, monkeypatch):
    fail_fast(monkeypatch)
    store = tmp_path / "store"
    run = ss.init("s3", store=store, array_store=s3.url(), **FAST)
    for step in range(5):
        run.log({"w": np.full(3, float(step))}, step=step)
    run.log({"img": ss.Image(np.eye(4))}, step=0)
    (tmp_path / "notes.txt").write_bytes(b"notes")
    run.log_artifact(tmp_path / "notes.txt")
    run.finish()
    with s3_server.link.down(), ss.open(store) as opened, contextlib.suppress(OSError):
        repair(opened)  # may fail, must not drop what it cannot read
    view = ss.open(store).run(run.id)
    assert view.tensor("w").steps.tolist() == list(range(5))
    assert [image.step for image in view.images("img")] == [0]
    assert view.artifact("notes.txt") == b"notes"


def test_a_write_to_a_network_that_never_answers_gives_up(s3_server, s3, monkeypatch):
    fail_fast(monkeypatch, timeout=1)
    array_store = location.ArrayLocation(s3.url())
    array_store.write("before", b"1")
    with ThreadPoolExecutor(1) as pool, s3_server.link.down(hang=True):
        start = time.monotonic()
        write = pool.submit(array_store.write, "during", b"2" * 1000)
        with pytest.raises(ss.StoreUnavailableError, match="cannot write"):
            write.result(timeout=20)  # a write that hangs ends when the link is restored
    assert time.monotonic() - start < 10
    assert s3.keys("arrays/") == ["arrays/before"]


def test_a_run_left_unfinished_is_flushed_at_exit(s3, tmp_path):
    store = tmp_path / "store"
    result = run_python(f"""
        import numpy as np, stepstore as ss
        run = ss.init("exit", store={str(store)!r}, array_store={s3.url()!r}, flush_interval=60)
        for step in range(5):
            run.log({{"w": np.full(3, float(step))}}, step=step)
        print(run.id)
    """)
    assert result.returncode == 0, result.stderr
    view = ss.open(store).run(result.stdout.split()[0])
    assert view.tensor("w").steps.tolist() == list(range(5))


def test_short_network_blip_is_ridden_out(s3_server, s3, tmp_path):
    store = tmp_path / "store"
    run = ss.init("s3", store=store, array_store=s3.url(), **FAST)
    recorder = Recorder(run)
    for step in range(10):
        recorder.log(step, {"w": np.full(6, step, np.float64)})
    run.flush()
    with s3_server.link.down():
        for step in range(10, 20):
            assert recorder.log(step, {"w": np.full(6, step, np.float64)})
        time.sleep(0.5)  # the writer's flushes meet the cut link
    run.finish()  # no error: s3fs's and botocore's retries hid the blip
    assert_tensors(ss.open(store).run(run.id), recorder.tensors)
