"""The conformance suite every backend runs.

:class:`BackendConformance` tests the whole :class:`~stepstore.backends.base.Backend`
protocol and, through the public API, recording, reading, resuming, crash recovery and
concurrent writers. A backend's tests subclass it and provide three pytest fixtures:

``store_uri``
    The URI (or path) of a fresh, empty store that nothing has opened yet; tests create
    the store through :func:`~stepstore.backends.open_backend` or :func:`stepstore.init`.
    Local journal and array directories of the test should be private to it (set
    ``$STEPSTORE_JOURNAL_DIR`` and ``$STEPSTORE_ARRAY_STORE``).
``backend``
    A backend opened with ``create=True`` on ``store_uri``, closed after the test.
``store_sql``
    A :data:`StoreSQL` callable that runs one SQL statement (``?`` placeholders,
    identifiers that are reserved words in double quotes) on the store's database in a
    transaction of its own and returns the rows; tests damage data with it.

Example::

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def store_uri(self, tmp_path): ...

Needs pytest (and the backend's driver); importing :mod:`stepstore` never imports this.
"""

from __future__ import annotations

import math
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stepstore as ss

from .backends import open_backend
from .backends.base import (
    ArrayBatch,
    ArtifactRow,
    Backend,
    EventRow,
    ImageRow,
    Problem,
    RecordRow,
    RunRecord,
)
from .errors import (
    InvalidArgumentError,
    KindMismatchError,
    NotAStoreError,
    NotFoundError,
    SchemaVersionError,
)
from .series.chunk import NO_EPOCH, Columns, EncodedChunk, decode, make_chunk
from .series.tail import Summary
from .tensors.index import ChunkIndex, Segment

#: Runs one statement with ``?`` placeholders on a store's database; returns its rows.
StoreSQL = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

#: Values whose bits must survive every store: signed zeros, extremes, a subnormal,
#: infinities, NaN and a NaN with a payload.
SPECIAL_VALUES = (
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
)
#: Steps up to the largest one a run accepts.
LARGE_STEPS = (0, 1, 2**31, 2**40, 2**53 + 1, 2**62 - 1, 2**62, 2**63 - 3, 2**63 - 2, 2**63 - 1)

_WRITER = """
import sys, stepstore as ss
run = ss.init("crash", store=sys.argv[1], flush_interval=60.0, chunk_size=64)
print(run.id, flush=True)
i = 0
while True:
    run.log({"a": i * 0.25, "b": -float(i)}, epoch=i // 100)
    if i % 97 == 0:
        print(i, flush=True)  # i was logged (log returned) before this line
    i += 1
"""

_CONCURRENT = """
import sys, stepstore as ss
k = int(sys.argv[2])
run = ss.init("concurrent", store=sys.argv[1], name=f"w{k}", flush_interval=0.01,
              chunk_size=256)
for i in range(int(sys.argv[3])):
    run.log({"x": i * 0.5 + k, "y": -i * 0.125 - k})
run.finish()
"""


def bits(values: Any) -> list[int]:
    """The IEEE-754 bit patterns of float64 values."""
    return np.asarray(values, dtype=np.float64).view(np.uint64).tolist()


def columns(
    steps: Sequence[int], epochs: Sequence[int] | None = None, values: Any = None
) -> Columns:
    """Chunk columns for ``steps`` (values default to ``step / 2``, epochs to none)."""
    step = np.asarray(steps, dtype=np.int64)
    epoch = (
        np.full(len(step), NO_EPOCH, np.int64)
        if epochs is None
        else np.asarray(epochs, dtype=np.int64)
    )
    value = step / 2.0 if values is None else np.asarray(values, dtype=np.float64)
    return Columns(step, epoch, step * 1000 + 1_700_000_000_000_000, value)


def run_record(run_id: str, **fields: Any) -> RunRecord:
    """A run record with defaults for the fields a test does not care about."""
    now = time.time()
    defaults: dict[str, Any] = {
        "project": "conformance",
        "name": run_id,
        "status": "finished",
        "created": now,
        "heartbeat": now,
    }
    return RunRecord(id=run_id, **{**defaults, **fields})


def needs_processes(store_uri: str) -> None:
    """Skip a test that reaches the store from other processes when the store lives in
    this one (``memory://``)."""
    if store_uri.startswith("memory://"):
        pytest.skip("a memory:// store lives in one process")


def python(code: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter that imports this stepstore."""
    source = str(Path(ss.__file__).parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        **popen,
    )


class BackendConformance:
    """Tests every backend passes; see the module docstring for the fixtures they need."""

    # -- runs ------------------------------------------------------------------------------

    def test_run_record_round_trips(self, backend: Backend) -> None:
        record = RunRecord(
            id="r1",
            project="proj ✓",
            name="näme 1",
            status="running",
            created=1_700_000_000.123456789,
            ended=None,
            heartbeat=time.time() + 0.1 / 3,
            host="host-1",
            pid=4242,
            git_commit="0123abcd",
            params={
                "lr": 1e-3,
                "model": {"width": 64, "act": "relu"},
                "flag": True,
                "none": None,
                "list": [1, "a"],
                "big": 2**53 + 1,
                "inf": math.inf,
                "inf ": "a trailing space makes another path",
            },
            tags=["b", "a", "a ", "A", "émoji 🎉"],
            env={"python": "3.11", "nested": {"x": [1, 2]}},
            capture={"keys": {"loss": {"recorded": 3}}},
            writer={"flushes": 2},
            journal_seq=7,
            array_store="s3://bucket/arrays",
        )
        backend.create_run(record)
        assert backend.get_run("r1") == record
        assert backend.get_run("näme 1") == record
        assert backend.find_runs() == [record]

    def test_unknown_and_ambiguous_runs(self, backend: Backend) -> None:
        backend.create_run(run_record("x1", name="same", created=1.0))
        backend.create_run(run_record("x2", name="same", created=2.0))
        with pytest.raises(NotFoundError, match="no run with id or name 'zzz'"):
            backend.get_run("zzz")
        with pytest.raises(InvalidArgumentError, match="run name 'same' is ambiguous"):
            backend.get_run("same")
        assert backend.get_run("x2").id == "x2"

    def test_an_ambiguous_name_lists_its_ids_by_creation_time(self, backend: Backend) -> None:
        for run_id, created in (("n3", 3.0), ("n1", 1.0), ("n2", 2.0)):
            backend.create_run(run_record(run_id, name="twin", created=created))
        with pytest.raises(InvalidArgumentError, match=r"use one of the ids n1, n2, n3$"):
            backend.get_run("twin")

    def test_update_run(self, backend: Backend) -> None:
        backend.create_run(run_record("u1", status="running"))
        backend.update_run(
            "u1",
            status="finished",
            ended=12345.5,
            heartbeat=12345.25,
            capture={"bindings": [], "keys": {"é": {"skipped": 1}}},
            writer={"flushes": 3},
            journal_seq=99,
        )
        record = backend.get_run("u1")
        assert (record.status, record.ended, record.heartbeat, record.journal_seq) == (
            "finished",
            12345.5,
            12345.25,
            99,
        )
        assert record.capture == {"bindings": [], "keys": {"é": {"skipped": 1}}}
        assert record.writer == {"flushes": 3}
        with pytest.raises(InvalidArgumentError, match="cannot update run fields"):
            backend.update_run("u1", name="other")

    def _filter_runs(self, backend: Backend) -> dict[str, str]:
        """Four runs for filter tests; returns name -> id."""
        now = time.time()
        runs = [
            run_record(
                "id-a",
                name="a",
                project="vision",
                created=1000.0,
                params={
                    "lr": 0.001,
                    "opt": "Adam",
                    "flag": True,
                    "model": {"width": 64},
                    "sched": None,
                    "layers": [1, 2],
                },
                tags=["baseline", "Gpu"],
            ),
            run_record(
                "id-b",
                name="b",
                project="vision",
                created=2000.0,
                params={"lr": 0.01, "opt": "adam", "flag": False, "model": {"width": 128}},
                tags=["gpu"],
            ),
            run_record(
                "id-c",
                name="c",
                project="text",
                status="running",
                created=now,
                heartbeat=now,
                params={"lr": 0.1, "opt": "sgd"},
            ),
            run_record(
                "id-d",
                name="d",
                project="text",
                status="running",
                created=3000.0,
                heartbeat=3000.0,
                params={"lr": "high"},
                tags=["baseline"],
            ),
        ]
        for run in runs:
            backend.create_run(run)
        summaries = {
            "id-a": {
                "loss": Summary(10, 0.1, 2.0, 0.5, 0, 9),
                "acc": Summary(1, None, None, math.nan, 0, 0),
            },
            "id-b": {
                "loss": Summary(5, 0.2, 3.0, math.nan, 0, 4),
                "val loss": Summary(1, 1.0, 1.0, 1.0, 4, 4),
            },
            "id-c": {"loss": Summary(3, -math.inf, math.inf, math.inf, 0, 2)},
        }
        for run_id, by_key in summaries.items():
            pairs = [(backend.ensure_series(run_id, k, "scalar"), s) for k, s in by_key.items()]
            backend.commit(run_id, [], pairs, {})
        return {run.name: run.id for run in runs}

    @pytest.mark.parametrize(
        ("where", "expected"),
        [
            (None, "abdc"),
            ("params.lr < 0.05", "ab"),
            ("params.lr = 'high'", "d"),
            ("params.lr != 0.001", "bdc"),
            ("params.opt = 'adam'", "b"),
            ("params.opt < 'a'", "a"),  # code point order: 'A' < 'a'
            ("params.opt >= 'adam'", "bc"),
            ("params.flag = true", "a"),
            ("params.flag = 0", "b"),
            ("params.model.width >= 100", "b"),
            ("params.sched = null", "a"),
            ("params.sched != null", ""),
            ("params.layers = '[1, 2]'", "a"),
            ("params.lr in (0.01, 'high')", "bd"),
            ("params.opt not in ('Adam', 'sgd')", "b"),
            ("not (params.lr = 0.001)", "bdc"),
            ("'baseline' in tags", "ad"),
            ("'gpu' in tags", "b"),
            ("'baseline' not in tags", "bc"),
            ("tags = 'Gpu'", "a"),
            ("summary.loss.last < 1", "a"),
            ("summary.loss.last > 1", "c"),  # NaN matches no comparison, inf does
            ("summary.loss.max > 1e300", "c"),
            ("summary.loss.min < -1e300", "c"),
            ("summary.loss.count >= 5", "ab"),
            ("summary['val loss'].last = 1", "b"),
            ("summary.acc.last != 0", "a"),
            ("summary.acc.max > 0", ""),
            ("status = 'finished'", "ab"),
            ("status = 'running'", "c"),
            ("status = 'crashed'", "d"),  # a running run without a recent heartbeat
            ("status in ('running', 'crashed')", "dc"),
            ("created < 1500", "a"),
            ("created >= '1970-01-01T00:50:00Z'", "dc"),
            ("name = 'c' or project = 'vision'", "abc"),
            ("id = 'id-b'", "b"),
            ("name = '50%' or name = '%s'", ""),  # no placeholder is a literal % sign
            ("project > 'text'", "ab"),
        ],
    )
    def test_find_runs_filters(self, backend: Backend, where: str | None, expected: str) -> None:
        self._filter_runs(backend)
        assert "".join(r.name for r in backend.find_runs(where)) == expected

    def test_find_runs_by_project_and_stale_status(self, backend: Backend) -> None:
        self._filter_runs(backend)
        assert [r.name for r in backend.find_runs(project="text")] == ["d", "c"]
        assert [r.name for r in backend.find_runs("params.lr > 0", project="vision")] == ["a", "b"]
        assert backend.get_run("d").status == "crashed"
        assert backend.get_run("c").status == "running"

    def test_update_params_replaces_what_filters_read(self, backend: Backend) -> None:
        backend.create_run(run_record("p1", params={"lr": 0.1, "opt": {"name": "sgd"}}))
        backend.create_run(run_record("p2", params={"lr": 0.1}))
        params = {"lr": 0.01, "opt": {"name": "adam", "beta": 0.9}}
        backend.update_params("p1", params)
        backend.update_params("p1", params)  # unchanged: still found
        assert backend.get_run("p1").params == params
        assert [r.id for r in backend.find_runs("params.lr < 0.05")] == ["p1"]
        assert [r.id for r in backend.find_runs("params.opt.name = 'adam'")] == ["p1"]
        assert [r.id for r in backend.find_runs("params.opt.name = 'sgd'")] == []
        assert backend.get_run("p2").params == {"lr": 0.1}
        with pytest.raises(NotFoundError, match="no run with id 'nope'"):
            backend.update_params("nope", {})

    # -- series and chunks -----------------------------------------------------------------

    def test_ensure_series_and_kind_mismatch(self, backend: Backend) -> None:
        backend.create_run(run_record("s1"))
        long_a = "k" * 1000 + "é" * 23 + "a"  # 1024 characters
        long_b = "k" * 1000 + "é" * 23 + "b"
        keys = ["loss", "Loss", "val/acc", "ü", "B", long_a, long_b, "🎉" * 1024]
        ids = [backend.ensure_series("s1", key, "scalar") for key in keys]
        assert len(set(ids)) == len(keys)
        assert [backend.ensure_series("s1", key, "scalar") for key in keys] == ids
        assert [s.key for s in backend.series("s1")] == sorted(keys)  # code point order
        assert all(s.summary == Summary() for s in backend.series("s1"))
        with pytest.raises(KindMismatchError, match="key 'loss' of run s1 holds scalar values"):
            backend.ensure_series("s1", "loss", "tensor")
        backend.create_run(run_record("s2"))
        assert backend.ensure_series("s2", "loss", "tensor") not in ids

    def test_commit_replaces_the_open_chunk(self, backend: Backend) -> None:
        backend.create_run(run_record("c1"))
        sid = backend.ensure_series("c1", "x", "scalar")
        assert backend.open_chunk(sid) is None
        assert backend.next_chunk_seq(sid) == 0
        first = columns(range(10))
        summary = Summary(10, 0.0, 4.5, 4.5, 0, 9)
        backend.commit("c1", [(sid, make_chunk(0, first, sealed=False))], [(sid, summary)], {})
        row = backend.open_chunk(sid)
        assert row is not None and (row.seq, row.sealed, row.count) == (0, False, 10)
        assert type(row.sealed) is bool
        assert bits(decode(row.data or b"").value) == bits(first.value)
        assert backend.next_chunk_seq(sid) == 1
        sealed = make_chunk(0, columns(range(16)), sealed=True)
        tail = make_chunk(1, columns(range(16, 21)), sealed=False)
        backend.commit(
            "c1", [(sid, sealed), (sid, tail)], [(sid, Summary(21, 0.0, 10.0, 10.0, 0, 20))], {}
        )
        rows = backend.chunks(sid)
        assert [(r.seq, r.sealed, r.count, r.first_step, r.last_step) for r in rows] == [
            (0, True, 16, 0, 15),
            (1, False, 5, 16, 20),
        ]
        assert [r.checksum for r in rows] == [sealed.checksum, tail.checksum]
        assert [r.stats for r in rows] == [sealed.stats, tail.stats]
        row = backend.open_chunk(sid)
        assert row is not None and row.seq == 1 and row.data == tail.data
        backend.commit("c1", [(sid, make_chunk(1, columns(range(16, 32)), sealed=True))], [], {})
        assert backend.open_chunk(sid) is None
        assert backend.next_chunk_seq(sid) == 2
        (series,) = backend.series("c1")
        assert series.summary == Summary(21, 0.0, 10.0, 10.0, 0, 20)

    def test_commit_of_many_chunks_and_run_fields(self, backend: Backend) -> None:
        backend.create_run(run_record("c2", status="running"))
        sids = [backend.ensure_series("c2", f"k{i}", "scalar") for i in range(40)]
        rng = np.random.default_rng(1)
        chunks: list[tuple[int, EncodedChunk]] = []
        for sid in sids:
            for seq in range(3):
                steps = range(seq * 500, seq * 500 + 500)
                values = rng.standard_normal(500)
                chunks.append((sid, make_chunk(seq, columns(steps, values=values), seq < 2)))
        backend.commit(
            "c2", chunks, [], {"journal_seq": 42, "heartbeat": 5.5, "writer": {"points": 1}}
        )
        record = backend.get_run("c2")
        assert (record.journal_seq, record.heartbeat, record.writer) == (42, 5.5, {"points": 1})
        for sid in sids:
            stored = backend.chunks(sid)
            expected = [c for s, c in chunks if s == sid]
            assert [r.data for r in stored] == [c.data for c in expected]

    def test_ranks_keep_their_own_series_and_rows(self, backend: Backend) -> None:
        backend.create_run(run_record("k1", status="running"))
        assert backend.ranks("k1") == []
        ids = {rank: backend.ensure_series("k1", "loss", "scalar", rank) for rank in (0, 2, 1)}
        assert len(set(ids.values())) == 3
        assert backend.ensure_series("k1", "loss", "scalar", 2) == ids[2]
        with pytest.raises(KindMismatchError, match="key 'loss' of run k1 holds scalar values"):
            backend.ensure_series("k1", "loss", "tensor", 1)
        joined = backend.join_rank("k1", 2, "node-2", 202)
        assert (joined.host, joined.pid, joined.status) == ("node-2", 202, "running")
        backend.join_rank("k1", 1, "node-1", 101)
        for rank, sid in ids.items():
            steps = range(rank * 10, rank * 10 + 5)
            summary = Summary(5, 0.0, 4.0, 4.0, steps[0], steps[-1])
            backend.commit(
                "k1",
                [(sid, make_chunk(0, columns(steps), sealed=False))],
                [(sid, summary)],
                {"journal_seq": 10 + rank, "heartbeat": time.time()},
                rank,
            )
        assert [s.rank for s in backend.series("k1")] == [0]
        assert [(s.rank, s.summary.first_step) for s in backend.series("k1", 2)] == [(2, 20)]
        assert [(s.key, s.rank, s.id) for s in backend.series("k1", None)] == [
            ("loss", 0, ids[0]),
            ("loss", 1, ids[1]),
            ("loss", 2, ids[2]),
        ]
        for rank, sid in ids.items():
            (row,) = backend.chunks(sid)
            assert (row.first_step, row.last_step) == (rank * 10, rank * 10 + 4)
        assert [(r.rank, r.journal_seq, r.status) for r in backend.ranks("k1")] == [
            (1, 11, "running"),
            (2, 12, "running"),
        ]
        assert backend.get_run("k1").journal_seq == 10  # rank 0's fields are the run's
        backend.commit("k1", [], [], {"status": "finished", "ended": 5.0}, 1)
        with pytest.raises(InvalidArgumentError, match=r"cannot update run fields \['capture'\]"):
            backend.commit("k1", [], [], {"capture": {}}, 2)
        rejoined = backend.join_rank("k1", 1, "node-9", 909)  # a restarted worker
        assert (rejoined.host, rejoined.pid, rejoined.status, rejoined.ended) == (
            "node-9",
            909,
            "running",
            None,
        )
        assert rejoined.journal_seq == 11  # its journal position is kept
        backend.commit("k1", [], [], {"heartbeat": time.time() - 3600}, 2)
        assert [r.status for r in backend.ranks("k1")] == ["running", "crashed"]

    def test_chunks_select_step_and_epoch_ranges(self, backend: Backend) -> None:
        backend.create_run(run_record("c3"))
        sid = backend.ensure_series("c3", "x", "scalar")
        parts = [
            columns(range(0, 10), [0] * 10),
            columns(range(10, 20), [1] * 10),
            columns(range(20, 30), [2] * 5 + [3] * 5),
            columns(range(30, 40)),  # no epoch
            columns([2**62, 2**63 - 1], [2**40, 2**40]),
        ]
        chunks = [(sid, make_chunk(i, c, sealed=True)) for i, c in enumerate(parts)]
        backend.commit("c3", chunks, [], {})

        def seqs(**ranges: Any) -> list[int]:
            return [r.seq for r in backend.chunks(sid, **ranges)]

        assert seqs() == [0, 1, 2, 3, 4]
        assert seqs(steps=(9, 10)) == [0, 1]
        assert seqs(steps=(10, 19)) == [1]
        assert seqs(steps=(40, 2**62 - 1)) == []
        assert seqs(steps=(2**63 - 1, 2**63 - 1)) == [4]
        assert seqs(epochs=(1, 2)) == [1, 2]
        assert seqs(epochs=(3, 3)) == [2]
        assert seqs(epochs=(2**40, 2**40)) == [4]
        assert seqs(steps=(0, 25), epochs=(2, 9)) == [2]
        light = backend.chunks(sid, steps=(0, 15), with_data=False)
        assert [(r.seq, r.data) for r in light] == [(0, None), (1, None)]
        assert [r.stats for r in light] == [chunks[0][1].stats, chunks[1][1].stats]

    def test_summaries_keep_nan_and_infinities(self, backend: Backend) -> None:
        backend.create_run(run_record("n1"))
        cases = {
            "nan-last": Summary(3, 0.5, 2.0, math.nan, 0, 2),
            "inf-last": Summary(2, 1.0, math.inf, math.inf, 5, 6),
            "neg-inf": Summary(2, -math.inf, 3.0, -math.inf, 0, 2**63 - 1),
            "all-nan": Summary(4, None, None, math.nan, 0, 3),
            "tiny": Summary(1, 5e-324, 5e-324, 5e-324, 2**62, 2**62),
            "exact": Summary(2, 0.1 + 0.2, 1.7976931348623157e308, -0.0, 1, 2),
            "empty": Summary(),
        }
        ids = {key: backend.ensure_series("n1", key, "scalar") for key in cases}
        backend.commit("n1", [], [(ids[k], s) for k, s in cases.items()], {})
        stored = {s.key: s.summary for s in backend.series("n1")}
        for key, summary in cases.items():
            got = stored[key]
            assert (got.count, got.first_step, got.last_step) == (
                summary.count,
                summary.first_step,
                summary.last_step,
            ), key
            for name in ("min", "max", "last"):
                want, have = getattr(summary, name), getattr(got, name)
                if want is None:
                    assert have is None, (key, name)
                elif math.isnan(want):
                    assert have is not None and math.isnan(have), (key, name)
                else:
                    assert bits([have]) == bits([want]) or (want == 0.0 and have == 0.0), (
                        key,
                        name,
                    )

    # -- arrays, records, images, artifacts --------------------------------------------------

    def test_commit_arrays_round_trips(self, backend: Backend) -> None:
        backend.create_run(run_record("t1"))
        tid = backend.ensure_series("t1", "weights/w", "tensor")
        rid = backend.ensure_series("t1", "notes", "record")
        iid = backend.ensure_series("t1", "samples", "image")
        segment = Segment(tid, 0, (3, 4), "float32", 16, "raw", "t1/weights/w/0")
        ints = np.arange(3, dtype="<i8").tobytes()
        first = ChunkIndex(tid, 0, 0, 0, 2, 3, False, ints, ints, ints, b"\x01" * 12)
        backend.commit_arrays(
            ArrayBatch(
                segments=[segment],
                chunks=[first],
                records=[
                    RecordRow(rid, 5, None, 100, '{"a": 1}'),
                    RecordRow(rid, 2, 0, 50, '{"b": "é"}'),
                ],
                images=[
                    ImageRow(iid, 1, 0, None, 10, "first", "t1/img/1-0.png", 100, 7),
                    ImageRow(iid, 1, 1, 0, 11, None, "t1/img/1-1.png", 200, 8),
                ],
                artifacts=[ArtifactRow("t1", "model.pt", "t1/artifacts/model.pt", 10, "ab", 1.5)],
            )
        )
        four = np.arange(4, dtype="<i8").tobytes()
        replaced = ChunkIndex(tid, 0, 0, 0, 3, 4, False, four, four, four, b"\x02" * 16)
        second = ChunkIndex(tid, 0, 1, 16, 16, 1, True, ints[:8], ints[:8], ints[:8], b"\x03" * 4)
        backend.commit_arrays(
            ArrayBatch(
                segments=[Segment(tid, 0, (3, 4), "float32", 16, "raw", "elsewhere")],
                chunks=[replaced, second],
                records=[RecordRow(rid, 5, 1, 101, '{"a": 2}')],
                images=[ImageRow(iid, 1, 0, 0, 12, "replaced", "t1/img/1-0.png", 101, 9)],
                artifacts=[
                    ArtifactRow("t1", "model.pt", "t1/artifacts/model.pt", 20, "cd", 2.5),
                    ArtifactRow("t1", "a.txt", "t1/artifacts/a.txt", 1, "ef", 3.5),
                ],
            )
        )
        backend.commit_arrays(ArrayBatch())  # nothing to write
        assert backend.tensor_index(tid) == ([segment], [replaced, second])
        assert backend.records(rid) == [
            RecordRow(rid, 2, 0, 50, '{"b": "é"}'),
            RecordRow(rid, 5, None, 100, '{"a": 1}'),
            RecordRow(rid, 5, 1, 101, '{"a": 2}'),
        ]
        assert backend.images(iid) == [
            ImageRow(iid, 1, 0, 0, 12, "replaced", "t1/img/1-0.png", 101, 9),
            ImageRow(iid, 1, 1, 0, 11, None, "t1/img/1-1.png", 200, 8),
        ]
        assert backend.artifacts("t1") == [
            ArtifactRow("t1", "a.txt", "t1/artifacts/a.txt", 1, "ef", 3.5),
            ArtifactRow("t1", "model.pt", "t1/artifacts/model.pt", 20, "cd", 2.5),
        ]
        summaries = {s.key: s.summary for s in backend.series("t1")}
        assert (summaries["weights/w"].count, summaries["weights/w"].first_step) == (5, 0)
        assert summaries["weights/w"].last_step == 16
        assert (summaries["notes"].count, summaries["notes"].first_step) == (3, 2)
        assert summaries["notes"].last_step == 5
        assert (summaries["samples"].count, summaries["samples"].last_step) == (2, 1)
        assert summaries["notes"].last is None  # only scalar series read NULL as NaN

    # -- events -----------------------------------------------------------------------------

    def test_events_round_trip_in_time_order(self, backend: Backend) -> None:
        backend.create_run(run_record("e1"))
        backend.create_run(run_record("e2"))
        assert backend.events("e1") == []
        later = EventRow("e1", 0, 2**62, 1_700_000_002.5, "on_nan", "loss", "loss is NaN")
        first = EventRow(
            "e1", 3, 7, 1_700_000_001.25, "dump_flight", None, "asked: \u00e9 \U0001f600"
        )
        same_time = EventRow("e1", 1, 7, 1_700_000_001.25, "on_change", "a/b" * 300, "")
        other = EventRow("e2", 0, 1, 1.0, "on_exception", None, "ValueError('x')")
        for event in (later, first, same_time, other):
            backend.add_event(event)
        assert backend.events("e1") == [same_time, first, later]
        assert backend.events("e2") == [other]
        assert backend.events("nope") == []

    # -- integrity and schema ---------------------------------------------------------------

    def test_check_reports_a_corrupted_chunk(self, backend: Backend, store_sql: StoreSQL) -> None:
        backend.create_run(run_record("k1"))
        a = backend.ensure_series("k1", "a", "scalar")
        b = backend.ensure_series("k1", "b", "scalar")
        chunks = [
            (sid, make_chunk(seq, columns(range(seq * 16, seq * 16 + 16)), sealed=True))
            for sid in (a, b)
            for seq in range(3)
        ]
        backend.commit("k1", chunks, [], {})
        assert backend.check() == []
        ((data,),) = store_sql("SELECT data FROM chunks WHERE series_id = ? AND seq = ?", (a, 1))
        damaged = bytearray(bytes(data))
        damaged[-3] ^= 0xFF
        store_sql(
            "UPDATE chunks SET data = ? WHERE series_id = ? AND seq = ?", (bytes(damaged), a, 1)
        )
        assert backend.check() == [Problem("run k1 key 'a' chunk 1", "checksum mismatch")]

    def test_check_compares_the_schema_version(self, backend: Backend, store_sql: StoreSQL) -> None:
        version = backend.schema_version
        store_sql("UPDATE meta SET value = ? WHERE \"key\" = 'schema_version'", (str(version - 1),))
        assert backend.check() == [
            Problem(backend.uri, f"schema version {version - 1}, expected {version}")
        ]

    def test_newer_schema_is_refused(
        self, backend: Backend, store_uri: str, store_sql: StoreSQL
    ) -> None:
        version = backend.schema_version
        assert version >= 1
        store_sql("UPDATE meta SET value = ? WHERE \"key\" = 'schema_version'", (str(version + 1),))
        pattern = rf"schema version {version + 1} is newer than this stepstore supports"
        for create in (False, True):
            with pytest.raises(SchemaVersionError, match=pattern):
                open_backend(store_uri, create=create)
        with pytest.raises(SchemaVersionError):
            ss.init("p", store=store_uri)

    def test_processes_opening_a_new_store_at_once_migrate_it_once(self, store_uri: str) -> None:
        needs_processes(store_uri)
        code = """
            import sys, time
            from stepstore.backends import open_backend
            time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all open at one instant
            backend = open_backend(sys.argv[1], create=True)
            print(backend.schema_version)
            backend.close()
            """
        start = str(time.time() + 3.0)
        procs = [
            python(code, store_uri, start, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(8)
        ]
        results = [(p.communicate(timeout=120), p.returncode) for p in procs]
        assert [err for (_, err), code in results if code] == []
        latest = open_backend(store_uri, create=False)
        try:
            assert {out.strip() for (out, _), _ in results} == {str(latest.schema_version)}
        finally:
            latest.close()

    def test_missing_store_is_not_created_by_readers(self, store_uri: str) -> None:
        with pytest.raises(NotAStoreError, match="not a stepstore store"):
            open_backend(store_uri, create=False)
        with pytest.raises(NotAStoreError):
            ss.open(store_uri)
        first = open_backend(store_uri, create=True)
        again = open_backend(store_uri, create=False)
        try:
            assert again.find_runs() == []
        finally:
            first.close()
            again.close()

    # -- end to end through the public API -------------------------------------------------

    def test_logged_values_read_back_bit_for_bit(self, store_uri: str) -> None:
        run = ss.init("e2e", store=store_uri, flush_interval=0.05, params={"lr": 0.1}, tags=["t"])
        for step, value in zip(LARGE_STEPS, SPECIAL_VALUES, strict=True):
            run.log({"v": value, "w": float(step % 1000), "z": -value}, step=step, epoch=step % 7)
        for i in range(3000):  # enough for several sealed chunks
            run.log({"dense": i / 7}, step=i, epoch=i // 1000)
        run.finish()
        with ss.open(store_uri) as store:
            view = store.run(run.id)
            assert (view.status, view.params, view.tags) == ("finished", {"lr": 0.1}, ["t"])
            frame = view.scalars("v")
            assert frame["step"].tolist() == list(LARGE_STEPS)
            assert frame["epoch"].tolist() == [s % 7 for s in LARGE_STEPS]
            assert bits(frame["value"]) == bits(SPECIAL_VALUES)
            assert bits(view.scalars("z")["value"]) == bits([-v for v in SPECIAL_VALUES])
            dense = view.scalars("dense", steps=(1000, 1999))
            assert bits(dense["value"]) == bits([i / 7 for i in range(1000, 2000)])
            assert view.scalars("dense", epochs=(2, 2))["step"].tolist() == list(range(2000, 3000))
            summary = view.summary
            assert summary["v"]["count"] == len(SPECIAL_VALUES)
            assert math.isnan(summary["v"]["last"])
            assert (summary["v"]["min"], summary["v"]["max"]) == (-math.inf, math.inf)
            assert summary["dense"]["last"] == 2999 / 7
            where = "summary.dense.count = 3000 and summary.v.max > 1e308 and 't' in tags"
            assert [r.id for r in store.runs(where=where)] == [run.id]
            assert store.check() == []

    def test_tensors_and_records_through_the_api(self, store_uri: str) -> None:
        with ss.init("e2e", store=store_uri, flush_interval=0.05) as run:
            for step in range(5):
                run.log({"w": np.full((2, 3), step, np.float32)}, step=step)
                odd = [math.nan, math.inf, -math.inf, -0.0, 1e-310][step]  # no NaN/inf in JSON
                run.log_record("note", {"text": f"n{step} \u00e9\U0001f600", "x": odd}, step=step)
        view = ss.open(store_uri).run(run.id)
        weights = view.tensor("w")
        assert weights.steps.tolist() == [0, 1, 2, 3, 4]
        assert np.array_equal(weights.at(3), np.full((2, 3), 3, np.float32))
        notes = view.records("note")
        assert notes["text"].tolist() == [f"n{i} \u00e9\U0001f600" for i in range(5)]
        x = notes["x"].tolist()
        assert math.isnan(x[0]) and x[1:3] == [math.inf, -math.inf]
        assert math.copysign(1.0, x[3]) == -1.0 and x[4] == 1e-310

    def test_resume_continues_steps(self, store_uri: str) -> None:
        run = ss.init("e2e", store=store_uri, flush_interval=0.05, chunk_size=64)
        for i in range(100):
            run.log({"x": float(i)})
        run.finish()
        resumed = ss.init("e2e", store=store_uri, resume=run.id, flush_interval=0.05)
        assert resumed.step == 100
        for i in range(100, 150):
            resumed.log({"x": float(i)})
        resumed.finish()
        view = ss.open(store_uri).run(run.id)
        frame = view.scalars("x")
        assert frame["step"].tolist() == list(range(150))
        assert frame["value"].tolist() == [float(i) for i in range(150)]
        assert view.status == "finished"

    def test_killed_writer_is_recovered_from_its_journal(self, store_uri: str) -> None:
        needs_processes(store_uri)
        ss.init("crash", store=store_uri).finish()  # create the store first
        proc = python(_WRITER, store_uri, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        last_seen = -1
        while last_seen < 2000:
            line = proc.stdout.readline()
            assert line, f"the writer exited with {proc.wait()}"
            last_seen = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with ss.open(store_uri) as store:  # opening recovers the orphaned journal
            view = store.run(run_id)
            assert view.status == "crashed"
            a = view.scalars("a")
            n = len(a)
            assert n > last_seen
            assert a["step"].tolist() == list(range(n))
            assert bits(a["value"]) == bits([i * 0.25 for i in range(n)])
            assert a["epoch"].tolist() == [i // 100 for i in range(n)]
            assert len(view.scalars("b")) in (n - 1, n)
            assert store.check() == []
            journals = store.backend.journal_dir
            assert journals is not None and not list(journals.glob("*.journal"))

    def test_concurrent_writer_processes(self, store_uri: str) -> None:
        needs_processes(store_uri)
        points, writers = 20_000, 8
        procs = [
            python(_CONCURRENT, store_uri, str(k), str(points), stderr=subprocess.PIPE)
            for k in range(writers)
        ]
        for proc in procs:
            _, errors = proc.communicate(timeout=300)
            assert proc.returncode == 0, errors
        with ss.open(store_uri) as store:
            assert sorted(r.name for r in store.runs(project="concurrent")) == [
                f"w{k}" for k in range(writers)
            ]
            for k in range(writers):
                view = store.run(f"w{k}")
                x, y = view.scalars("x"), view.scalars("y")
                assert x["step"].tolist() == list(range(points))
                assert bits(x["value"]) == bits([i * 0.5 + k for i in range(points)])
                assert bits(y["value"]) == bits([-i * 0.125 - k for i in range(points)])
            assert store.check() == []
