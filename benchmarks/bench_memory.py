"""Logging into ``memory://`` against the embedded store, in one process, interleaved.

    python benchmarks/bench_memory.py            # full run (about 1-2 minutes on 2 cores)
    python benchmarks/bench_memory.py --quick    # smaller N, fewer repeats

Rows, each the median of repeats, memory and embedded alternating (which goes first
alternates too), default settings (``flush_interval`` 1 s), every run in a fresh store:

- ``log()`` of 3 scalars: µs per point on the calling thread (the loop of logs alone).
- ingest, writer included: points per second from the first ``log()`` until ``finish()``
  returned (every point committed to the store).
- tensors: ``log()`` of one 64 KiB float32 array (16,384 values) per step: µs per step on
  the calling thread, and MB/s until ``finish()`` returned.
- a short run: ``init()`` + 10 logs + ``finish()`` in ms (a sweep of many small runs, or a
  unit test of training code).

The target (issue 16): memory at least as fast as the embedded store (ratio embedded/memory
>= 1 in every row, within the noise of the machine). Prints markdown and writes
``benchmarks/results/memory.md`` and ``memory.json`` (``memory.quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, load, median, num, perf, quiet, ratio, spread, table, verdict

import stepstore as ss

RESULTS = Path(__file__).resolve().parent / "results"
TENSOR = np.random.default_rng(0).standard_normal(16_384).astype(np.float32)  # 64 KiB


@dataclass
class Settings:
    """Sizes and repeats; ``--quick`` shrinks them."""

    repeats: int = 7
    scalar_steps: int = 100_000
    tensor_steps: int = 1_000
    short_runs: int = 50


QUICK = Settings(repeats=3, scalar_steps=20_000, tensor_steps=200, short_runs=10)


@dataclass
class Row:
    """One measured figure for both stores."""

    what: str
    unit: str
    memory: list[float]
    embedded: list[float]
    lower_is_better: bool

    @property
    def speedup(self) -> float:
        """How many times faster memory is than the embedded store (> 1: faster)."""
        memory, embedded = median(self.memory), median(self.embedded)
        return embedded / memory if self.lower_is_better else memory / embedded


class Stores:
    """Fresh stores of both kinds: embedded ones in a temporary folder, anonymous memory
    ones (freed when their run finishes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def __call__(self, kind: str) -> str:
        self.count += 1
        return "memory://" if kind == "memory" else str(self.root / f"store-{self.count}")


def scalar_run(store: str, steps: int) -> tuple[float, float]:
    """Seconds of ``steps`` logs of 3 scalars, and until ``finish()`` returned."""
    run = ss.init("bench", store=store)
    log = run.log
    quiet()
    start = perf()
    for i in range(steps):
        log({"loss": 1.0 / (i + 1), "acc": i * 1e-6, "lr": 0.1})
    logged = perf()
    run.finish()
    return logged - start, perf() - start


def tensor_run(store: str, steps: int) -> tuple[float, float]:
    """Seconds of ``steps`` logs of one 64 KiB tensor, and until ``finish()`` returned."""
    run = ss.init("bench", store=store)
    log = run.log
    quiet()
    start = perf()
    for _ in range(steps):
        log({"w": TENSOR})
    logged = perf()
    run.finish()
    return logged - start, perf() - start


def short_runs(stores: Stores, kind: str, count: int) -> float:
    """Seconds per run of ``init()`` + 10 logs + ``finish()``."""
    quiet()
    start = perf()
    for _ in range(count):
        with ss.init("bench", store=stores(kind), params={"lr": 0.1}) as run:
            for i in range(10):
                run.log({"loss": 1.0 / (i + 1)})
    return (perf() - start) / count


def interleaved(repeats: int, measure: Callable[[str], Any]) -> dict[str, list[Any]]:
    """``measure(kind)`` for both kinds, ``repeats`` times, the first kind alternating."""
    found: dict[str, list[Any]] = {"memory": [], "embedded": []}
    for repeat in range(repeats):
        kinds = ("memory", "embedded") if repeat % 2 == 0 else ("embedded", "memory")
        for kind in kinds:
            found[kind].append(measure(kind))
    return found


def measure(settings: Settings, root: Path) -> list[Row]:
    """Every row, measured."""
    stores = Stores(root)
    n, t = settings.scalar_steps, settings.tensor_steps
    scalars = interleaved(settings.repeats, lambda kind: scalar_run(stores(kind), n))
    tensors = interleaved(settings.repeats, lambda kind: tensor_run(stores(kind), t))
    short = interleaved(
        settings.repeats, lambda kind: short_runs(stores, kind, settings.short_runs)
    )
    mb = t * TENSOR.nbytes / 1e6

    def of(found: dict[str, list[Any]], figure: Callable[[Any], float]) -> dict[str, Any]:
        return {kind: [figure(x) for x in values] for kind, values in found.items()}

    return [
        Row(
            "`log()` of 3 scalars, calling thread",
            "µs/point",
            **of(scalars, lambda x: x[0] / (3 * n) * 1e6),
            lower_is_better=True,
        ),
        Row(
            "ingest of 3 scalars/step, writer included",
            "points/s",
            **of(scalars, lambda x: 3 * n / x[1]),
            lower_is_better=False,
        ),
        Row(
            "`log()` of a 64 KiB float32 tensor, calling thread",
            "µs/step",
            **of(tensors, lambda x: x[0] / t * 1e6),
            lower_is_better=True,
        ),
        Row(
            "tensor ingest, writer included",
            "MB/s",
            **of(tensors, lambda x: mb / x[1]),
            lower_is_better=False,
        ),
        Row(
            "short run: `init()` + 10 logs + `finish()`",
            "ms/run",
            **of(short, lambda x: x * 1e3),
            lower_is_better=True,
        ),
    ]


def report(rows: list[Row], settings: Settings, started_load: float) -> str:
    """The markdown of the results."""
    lines = [
        "# Logging into `memory://` against the embedded store",
        "",
        f"Medians of {settings.repeats} interleaved repeats in one process; "
        f"{settings.scalar_steps:,} steps of 3 scalars, {settings.tensor_steps:,} steps of a "
        f"64 KiB tensor, {settings.short_runs} short runs per repeat; default settings; "
        f"load average {started_load} at the start, {load()} at the end. "
        "Speedup: how many times faster memory is (>= 1: at least as fast).",
        "",
        table(
            [
                "figure",
                "unit",
                "memory://",
                "embedded",
                "speedup",
                "range memory",
                "range embedded",
                "at least as fast",
            ],
            [
                [
                    row.what,
                    row.unit,
                    num(median(row.memory)),
                    num(median(row.embedded)),
                    ratio(row.speedup),
                    "–".join(num(x) for x in spread(row.memory)),
                    "–".join(num(x) for x in spread(row.embedded)),
                    verdict(row.speedup >= 0.95),
                ]
                for row in rows
            ],
        ),
        "",
        "`at least as fast`: speedup >= 0.95 (5 % for the noise of a shared machine).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, fewer repeats")
    args = parser.parse_args()
    settings = QUICK if args.quick else Settings()
    started_load = load()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        rows = measure(settings, Path(folder))
    text = report(rows, settings, started_load)
    print(text)
    name = "memory.quick" if args.quick else "memory"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    data = {
        "settings": asdict(settings),
        "environment": environment(),
        "rows": [{**asdict(row), "speedup": row.speedup} for row in rows],
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
