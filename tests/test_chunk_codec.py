"""The scalar chunk codec: exact round trips, old chunks still read, damage reported."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import stepstore as ss
from stepstore.errors import StoreError
from stepstore.series import chunk
from stepstore.series.chunk import NO_EPOCH, Columns

from .conftest import FAST

I64 = np.iinfo(np.int64)

# Five points as stepstore wrote them before pipeline 2 (pipeline 1: one Blosc frame of the
# four columns): steps 0 1 2 5 9, the first two without an epoch, a NaN, -0.0 and 1e300.
PIPELINE_1_BLOB = bytes.fromhex(
    "5353434b01010500000002019108a0000000a000000078000000140000006000000028b52ffd20a0bd0200"
    "9403000101030400000000010064ce8e010000009c004000ffc675001e00ff2d001800ff8800243c0ae406"
    "e0f8003702800080ff00003f7f807e400d202003b30312e3a9658dc847c32e59f0e2a91db097b1772db16526"
)
PIPELINE_1_COLUMNS = Columns(
    np.array([0, 1, 2, 5, 9], np.int64),
    np.array([NO_EPOCH, NO_EPOCH, 0, 0, 1], np.int64),
    1_700_000_000_000_000 + np.array([0, 100, 50, 3_000_000, 3_000_001], np.int64),
    np.array([0.5, np.nan, -0.0, 1e300, 2.25]),
)


def same(got: Columns, want: Columns) -> bool:
    """Every column equal bit for bit (NaN payloads and -0.0 included) and of its dtype."""
    dtypes = (np.int64, np.int64, np.int64, np.float64)
    return all(
        g.dtype == t and g.tobytes() == np.asarray(w, t).tobytes()
        for g, w, t in zip(got, want, dtypes, strict=True)
    )


@st.composite
def chunks(draw: st.DrawFn) -> Columns:
    """Columns shaped like logged series (strided steps, steady or absent epochs, time
    deltas of every width) and like nothing logged (any int64 at all)."""
    n = draw(st.integers(1, 300))
    ints = hnp.arrays(np.int64, n, elements=st.integers(I64.min, I64.max))
    first = draw(st.integers(I64.min, I64.max))
    stride = draw(st.integers(-(2**40), 2**40))
    with np.errstate(over="ignore"):
        strided = first + np.arange(n, dtype=np.int64) * np.int64(stride)
    step = draw(st.sampled_from([strided, np.sort(draw(ints))]))
    constant = np.full(n, draw(st.sampled_from([NO_EPOCH, 0, 7, I64.max])), np.int64)
    epoch = draw(st.sampled_from([constant, draw(ints)]))
    gaps = draw(hnp.arrays(np.int64, n, elements=st.integers(-(2**33), 2**33)))
    start = draw(st.integers(I64.min, I64.max))
    with np.errstate(over="ignore"):
        near = start + np.cumsum(gaps)
    time = draw(st.sampled_from([near, draw(ints)]))
    value = draw(hnp.arrays(np.int64, n, elements=st.integers(I64.min, I64.max))).view("<f8")
    return Columns(step, epoch, time, value)


@settings(max_examples=300, deadline=None)
@given(chunks())
def test_every_chunk_round_trips_bit_for_bit(columns):
    blob = chunk.encode(columns)
    assert blob[5] == chunk.PIPELINE_COLUMNS_ZSTD
    assert same(chunk.decode(blob), columns)
    n = len(columns.step)
    out = Columns(*(np.full(n, -1, c.dtype) for c in columns))
    assert chunk.decode(blob, out=out) is out and same(out, columns)


def test_regular_steps_and_absent_epochs_cost_no_frame():
    n = 8192
    step, time = np.arange(n, dtype=np.int64) * 10, 1_700_000_000_000_000 + np.arange(n)
    value = np.random.default_rng(0).standard_normal(n)
    regular = chunk.encode(Columns(step, np.full(n, NO_EPOCH), time, value))
    irregular = step.copy()
    irregular[-1] += 1
    framed = chunk.encode(Columns(irregular, np.arange(n) // 100, time, value))
    assert len(regular) < len(framed)
    assert same(chunk.decode(regular), Columns(step, np.full(n, NO_EPOCH), time, value))


def test_chunks_written_before_pipeline_2_still_decode():
    assert PIPELINE_1_BLOB[5] == chunk.PIPELINE_DELTA_SHUFFLE_ZSTD
    assert same(chunk.decode(PIPELINE_1_BLOB), PIPELINE_1_COLUMNS)


def test_a_store_holding_pipeline_1_chunks_reads_them(store_uri, store_sql):
    run = ss.init("old", store=store_uri, chunk_size=16, **FAST)
    for step, epoch in zip([0, 1, 2, 5, 9], [None, None, 0, 0, 1], strict=True):
        run.log({"loss": 1.0}, step=step, epoch=epoch)
    run.finish()
    store_sql(
        "UPDATE chunks SET data = ?, checksum = ?, stats = ?",
        (
            PIPELINE_1_BLOB,
            chunk.checksum(PIPELINE_1_BLOB),
            chunk.compute_stats(PIPELINE_1_COLUMNS).tobytes(),
        ),
    )
    with ss.open(store_uri) as store:
        assert store.check() == []
        frame = store.run(run.id).scalars("loss")
        inside = store.run(run.id).scalars("loss", steps=(1, 5))
    assert frame["step"].tolist() == [0, 1, 2, 5, 9]
    assert frame["epoch"].isna().tolist() == [True, True, False, False, False]
    assert frame["epoch"].dropna().tolist() == [0, 0, 1]
    times = pd.to_datetime(PIPELINE_1_COLUMNS.time, unit="us", utc=True)
    assert frame["time"].tolist() == times.tolist()
    assert frame["value"].to_numpy().tobytes() == PIPELINE_1_COLUMNS.value.tobytes()
    assert inside["step"].tolist() == [1, 2, 5]


def blob_with(points: int = 64) -> bytes:
    n = points
    return chunk.encode(
        Columns(np.arange(n), np.arange(n) // 7, np.arange(n) * 10**6, np.linspace(0, 1, n))
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-5], "w: truncated chunk (a column ends past the blob)"),
        (lambda b: b + b"\x00", "w: chunk has 1 stray byte(s) at its end"),
        (lambda b: b[:2] + b"XX" + b[4:], "w: not a scalar chunk (magic b'SSXX')"),
        (lambda b: b[:5] + b"\x09" + b[6:], "w: chunk format 1/pipeline 9 is newer than this"),
        (lambda b: b[:6] + (65).to_bytes(4, "little") + b[10:], "w: epoch column holds 512 bytes"),
        (lambda b: b[:11] + b"\x00" + b[12:], "w: chunk holds 3 column frames, expected 2"),
        (lambda b: b[:12] + b"\x08" + b[13:], "w: time column holds 256 bytes, expected 512"),
        (lambda b: b[:10] + b"\x02" + b[11:], "w: unknown column layout (step kind 2, epoch"),
        (lambda b: b"SSCK\x01\x01\x10\x00\x00\x00garbage", "w: chunk payload does not decompress"),
    ],
)
def test_damaged_chunks_are_reported(damage, message):
    with pytest.raises(StoreError) as caught:
        chunk.decode(damage(blob_with()), "w")
    assert str(caught.value).startswith(message)
