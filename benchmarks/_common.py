"""Helpers shared by the benchmark scripts: statistics, sizes, environment, markdown tables."""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

perf = time.perf_counter


def median(values: Sequence[float]) -> float:
    """Median of the repeats (NaN if there are none)."""
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(min, max) of the repeats."""
    return (min(values), max(values)) if values else (float("nan"), float("nan"))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def quiet() -> None:
    """Collect garbage before a timed region so one tool does not pay for another's."""
    gc.collect()


def dir_size(path: str | os.PathLike[str]) -> int:
    """Bytes of all regular files under ``path`` (or of ``path`` itself)."""
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def disk_usage(path: str | os.PathLike[str]) -> int:
    """Bytes allocated on disk under ``path`` (st_blocks; sparse files count what they use)."""
    root = Path(path)
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def sqlite_checkpoint(db: str | os.PathLike[str]) -> None:
    """Fold a WAL into the database file so its size is what stays on disk."""
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def sqlite_freelist_bytes(db: str | os.PathLike[str]) -> int:
    """Bytes of free (reusable, not yet returned to the OS) pages in a SQLite file."""
    con = sqlite3.connect(db)
    try:
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        page = con.execute("PRAGMA page_size").fetchone()[0]
    finally:
        con.close()
    return int(free) * int(page)


def versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the named distributions ('-' when missing)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def environment() -> dict[str, Any]:
    """Where the numbers were taken."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "packages": versions(
            [
                "stepstore",
                "numpy",
                "pandas",
                "pyarrow",
                "numcodecs",
                "zstandard",
                "torch",
                "tensorboard",
                "protobuf",
                "mlflow",
                "sqlalchemy",
                "psutil",
            ]
        ),
    }


def load() -> float:
    """The 1-minute load average (how busy the shared machine is)."""
    return round(os.getloadavg()[0], 2)


# -- formatting ----------------------------------------------------------------------------


def num(x: float | None, digits: int = 2) -> str:
    """A number with ``digits`` significant decimals, thousands separators for big values."""
    if x is None or x != x:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def ratio(x: float | None) -> str:
    """A ratio such as ``6.3×``."""
    return "—" if x is None or x != x else f"{num(x)}×"


def pct(x: float | None) -> str:
    """A signed percentage."""
    return "—" if x is None or x != x else f"{x:+.1f} %"


def verdict(ok: bool | None) -> str:
    """PASS / MISS (or n/a when the figure is missing)."""
    return "n/a" if ok is None else ("PASS" if ok else "**MISS**")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
