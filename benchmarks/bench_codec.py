"""Scalar chunk codecs compared column by column: today's Blosc+zstd against pcodec.

    python benchmarks/bench_codec.py                    # runs the demo into a temp store first
    python benchmarks/bench_codec.py --store stepstore  # reads the store `make demo` made

Series: every scalar series of the demo run (real step, epoch and time columns of a training
loop), and two long ones built on the demo's own timing, 1M points each: a noisy loss
(``bench_scalars.noisy_curve``) and a step-wise learning rate (x0.1 every 300k steps, one
epoch per 1,000 steps). Their times are a random draw of the demo loss's step intervals.

Each column of each series is cut in chunks of the store's chunk size and encoded alone:
``blosc`` is what a chunk stores (wrap-around deltas for the int64 columns, byte shuffle,
zstd level 3, numcodecs), ``pcodec`` is ``pcodec.standalone`` at its default level on the
raw column (it finds deltas itself). Decode times include undoing the deltas. The ``chunk``
rows are whole chunks as the store writes them (all four columns in one blob). Prints
markdown and writes ``benchmarks/results/codec.md`` and ``codec.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, median, perf, table
from bench_scalars import noisy_curve

import stepstore as ss
from stepstore.series import chunk as codec
from stepstore.series.chunk import NO_EPOCH, Columns

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = ss.config.Config().chunk_size
LONG = 1_000_000
NAMES = ("step", "epoch", "time", "value")


def demo_series(store: str) -> dict[str, Columns]:
    """Every scalar series of every run in ``store``, by ``run/key``."""
    found = {}
    with ss.open(store) as st:
        for view in st.runs():
            for key in view.keys("scalar"):
                found[f"{view.name}/{key}"] = view.columns(key)
    return found


def long_series(demo: dict[str, Columns]) -> dict[str, Columns]:
    """The noisy loss and the step-wise LR, timed like the demo's loss."""
    loss = next(c for name, c in demo.items() if name.endswith("/loss"))
    intervals = np.diff(loss.time)
    rng = np.random.default_rng(7)
    step = np.arange(LONG, dtype=np.int64)
    time = loss.time[0] + np.r_[0, np.cumsum(rng.choice(intervals, LONG - 1))]
    no_epoch = np.full(LONG, NO_EPOCH, np.int64)
    return {
        "noisy loss (1M)": Columns(step, no_epoch, time, noisy_curve(LONG, seed=4)),
        "step-wise LR (1M)": Columns(step, step // 1000, time, 0.1 * 0.1 ** (step // 300_000)),
    }


def _delta(column: np.ndarray) -> np.ndarray:
    out = np.empty_like(column)
    out[:1] = column[:1]
    np.subtract(column[1:], column[:-1], out=out[1:])
    return out


def _blosc_codec() -> tuple[Callable[[np.ndarray], bytes], Callable[[bytes, np.ndarray], None]]:
    from numcodecs import Blosc

    blosc = Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE, blocksize=0)

    def encode(column: np.ndarray) -> bytes:
        if column.dtype.kind == "f":
            return bytes(blosc.encode(column))
        with np.errstate(over="ignore"):
            return bytes(blosc.encode(_delta(column)))

    def decode(blob: bytes, out: np.ndarray) -> None:
        blosc.decode(blob, out=out)
        if out.dtype.kind == "i":
            with np.errstate(over="ignore"):
                np.cumsum(out, out=out)

    return encode, decode


def _pcodec_codec() -> tuple[Callable[[np.ndarray], bytes], Callable[[bytes, np.ndarray], None]]:
    from pcodec import ChunkConfig, standalone

    config = ChunkConfig()

    def encode(column: np.ndarray) -> bytes:
        return standalone.simple_compress(column, config)

    def decode(blob: bytes, out: np.ndarray) -> None:
        standalone.simple_decompress_into(blob, out)

    return encode, decode


CODECS = {"blosc": _blosc_codec, "pcodec": _pcodec_codec}


def measure(column: np.ndarray, encode: Callable, decode: Callable, repeats: int) -> dict:
    """Bytes per point, and encode and decode ms per 1M points (medians), chunk by chunk."""
    parts = [np.ascontiguousarray(column[i : i + CHUNK]) for i in range(0, len(column), CHUNK)]
    blobs = [encode(p) for p in parts]
    out = np.empty(len(column), column.dtype)
    enc, dec = [], []
    for _ in range(repeats):
        t0 = perf()
        for p in parts:
            encode(p)
        t1 = perf()
        start = 0
        for blob, p in zip(blobs, parts, strict=True):
            decode(blob, out[start : start + len(p)])
            start += len(p)
        t2 = perf()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    assert out.tobytes() == column.tobytes(), "round trip changed the column"
    per_million = 1e9 / len(column)
    return {
        "bytes_per_point": sum(map(len, blobs)) / len(column),
        "encode_ms_per_1m": median(enc) * per_million,
        "decode_ms_per_1m": median(dec) * per_million,
    }


def whole_chunks(columns: Columns, repeats: int) -> dict:
    """Bytes per point and encode/decode ms per 1M points of the store's own chunk blobs."""
    n = len(columns.step)
    parts = [Columns(*(c[i : i + CHUNK] for c in columns)) for i in range(0, n, CHUNK)]
    blobs = [codec.encode(p) for p in parts]
    enc, dec = [], []
    for _ in range(repeats):
        t0 = perf()
        for p in parts:
            codec.encode(p)
        t1 = perf()
        for blob in blobs:
            codec.decode(blob)
        t2 = perf()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    return {
        "bytes_per_point": sum(map(len, blobs)) / n,
        "encode_ms_per_1m": median(enc) * 1e9 / n,
        "decode_ms_per_1m": median(dec) * 1e9 / n,
    }


def _weighted(cells: list[dict], members: list[Columns]) -> dict[str, float]:
    """Each figure of ``cells`` (one per series) averaged over the points of ``members``."""
    points = sum(len(c.step) for c in members)
    return {
        key: sum(cell[key] * len(c.step) for cell, c in zip(cells, members, strict=True)) / points
        for key in cells[0]
    }


def run(store: str, repeats: int) -> dict[str, Any]:
    """Every measurement, by series group, column and codec."""
    demo = demo_series(store)
    groups = {f"demo: {len(demo)} series, one chunk each": list(demo.values())}
    groups.update({name: [c] for name, c in long_series(demo).items()})
    res: dict[str, Any] = {}
    for group, members in groups.items():
        rows: dict[str, Any] = {}
        points = sum(len(c.step) for c in members)
        for name in NAMES:
            for label, make in CODECS.items():
                encode, decode = make()
                cells = [measure(getattr(c, name), encode, decode, repeats) for c in members]
                rows[f"{name}/{label}"] = _weighted(cells, members)
        rows["chunk/blosc"] = _weighted([whole_chunks(c, repeats) for c in members], members)
        res[group] = {"points": points, "rows": rows}
    return res


def report(res: dict[str, Any]) -> str:
    """Markdown: one table per series group, and the verdict on the 10 % rule."""
    probe = Columns(*(np.zeros(1, t) for t in ("i8", "i8", "i8", "f8")))
    pipeline = codec.encode(probe)[5]
    md = [f"# Scalar chunk codecs: Blosc+zstd vs pcodec (chunks of {CHUNK:,} points)", ""]
    for group, entry in res["groups"].items():
        rows, lines = entry["rows"], []
        totals = {"blosc": 0.0, "pcodec": 0.0}
        for name in NAMES:
            b, p = rows[f"{name}/blosc"], rows[f"{name}/pcodec"]
            totals["blosc"] += b["bytes_per_point"]
            totals["pcodec"] += p["bytes_per_point"]
            lines.append(
                [
                    name,
                    f"{b['bytes_per_point']:.3f}",
                    f"{p['bytes_per_point']:.3f}",
                    f"{b['encode_ms_per_1m']:.1f}",
                    f"{p['encode_ms_per_1m']:.1f}",
                    f"{b['decode_ms_per_1m']:.1f}",
                    f"{p['decode_ms_per_1m']:.1f}",
                ]
            )
        saving = 1 - totals["pcodec"] / totals["blosc"]
        lines.append(
            [
                "**all four, column by column**",
                f"{totals['blosc']:.3f}",
                f"{totals['pcodec']:.3f} ({saving:+.1%} saved)",
                *[""] * 4,
            ]
        )
        whole = rows["chunk/blosc"]
        lines.append(
            [
                f"stored chunk blob (pipeline {pipeline})",
                f"{whole['bytes_per_point']:.3f}",
                "",
                f"{whole['encode_ms_per_1m']:.1f}",
                "",
                f"{whole['decode_ms_per_1m']:.1f}",
                "",
            ]
        )
        md += [f"## {group}: {entry['points']:,} points", ""]
        md.append(
            table(
                [
                    "column",
                    "Blosc+zstd B/point",
                    "pcodec B/point",
                    "Blosc encode ms/1M",
                    "pcodec encode ms/1M",
                    "Blosc decode ms/1M",
                    "pcodec decode ms/1M",
                ],
                lines,
            )
        )
        md.append("")
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a store holding the demo run (default: run the demo)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument("--out", default=str(RESULTS), help="where to write codec.md/.json")
    args = parser.parse_args()
    if importlib.util.find_spec("pcodec") is None:
        sys.exit("bench_codec.py compares against pcodec: pip install pcodec")
    with tempfile.TemporaryDirectory(prefix="stepstore-codec-") as tmp:
        store = args.store
        if store is None:
            from rich.console import Console

            from stepstore.demo import main as demo

            store = str(Path(tmp) / "demo")
            demo(store, console=Console(quiet=True))
        res = {"groups": run(store, args.repeats), "env": environment()}
    text = report(res)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codec.md").write_text(text)
    (out / "codec.json").write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
