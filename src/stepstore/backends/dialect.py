"""How one SQL database spells what the engine's statements need.

The engine (``engine.py``) writes every statement once, with ``%s`` placeholders and
``"key"``/``"rank"`` quoted with double quotes (MySQL sessions run with ``ANSI_QUOTES``);
a :class:`Dialect` supplies the rest: its placeholder, its upsert, its two-argument
maximum and minimum, how the series' unique index is named in a conflict target, how
summaries are stored, and the bulk path that writes a flush's chunks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..series.tail import Summary

#: Columns of the chunks table in the order a flush writes them.
CHUNK_COLUMNS = (
    "series_id",
    "seq",
    "first_step",
    "last_step",
    "min_epoch",
    "max_epoch",
    "count",
    "sealed",
    "stats",
    "checksum",
    "data",
)


def null_nan(value: float | None) -> float | None:
    """``value``, with NaN as ``None`` (stored as NULL)."""
    return None if value is None or math.isnan(value) else value


@dataclass(frozen=True)
class Dialect:
    """The spelling of one SQL database (the defaults are PostgreSQL's and standard SQL's).

    Attributes:
        name: The database's name, also the key of its migrations in ``schema.py``.
        param: The driver's placeholder (``?`` for sqlite3, ``%s`` for psycopg, PyMySQL).
        greatest: The two-argument maximum (SQLite's scalar ``MAX``).
        least: The two-argument minimum (SQLite's scalar ``MIN``).
        series_conflict: Conflict target of the series' unique (run, key, rank) index.
        row_order: Column giving the insertion order of records (SQLite's ``rowid``).
        meta_exists: Query counting the ``meta`` table of the store's schema (0 or 1).
        summary_columns: Columns of ``series`` holding a summary, as
            :meth:`summary_values` gives them.
        summary_types: Their types as read back (see ``base.decode_row``).
    """

    name: str
    param: str = "%s"
    greatest: str = "GREATEST"
    least: str = "LEAST"
    series_conflict: str = '(run_id, "key", "rank")'
    row_order: str = "id"
    meta_exists: str = ""
    summary_columns: tuple[str, ...] = (
        "count",
        "min",
        "max",
        "last",
        "first_step",
        "last_step",
    )
    summary_types: str = (
        "count:int min:float? max:float? last:float? first_step:int? last_step:int?"
    )

    @functools.lru_cache(maxsize=256)  # noqa: B019 -- dialects are a few module constants
    def sql(self, statement: str) -> str:
        """``statement`` (written with ``%s`` placeholders) in this dialect's placeholders."""
        return statement if self.param == "%s" else statement.replace("%s", self.param)

    def params(self, count: int) -> str:
        """``count`` placeholders separated by commas."""
        return ", ".join([self.param] * count)

    def upsert(
        self, table: str, columns: Sequence[str], conflict: str, update: Sequence[str] = ()
    ) -> str:
        """``INSERT`` of one row of ``columns`` that, when a row with the same unique key
        (named by ``conflict``) exists, sets its ``update`` columns or does nothing."""
        action = (
            "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in update)
            if update
            else "DO NOTHING"
        )
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({self.params(len(columns))}) "
            f"ON CONFLICT {conflict} {action}"
        )

    def write_chunks(self, cursor: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert chunk rows (:data:`CHUNK_COLUMNS`), replacing rows with the same key."""
        cursor.executemany(
            self.upsert("chunks", CHUNK_COLUMNS, "(series_id, seq)", CHUNK_COLUMNS[2:]), rows
        )

    def summary_values(self, summary: Summary) -> tuple[Any, ...]:
        """The values of :attr:`summary_columns` for ``summary`` (NaN stored as NULL)."""
        return (
            summary.count,
            null_nan(summary.min),
            null_nan(summary.max),
            null_nan(summary.last),
            summary.first_step,
            summary.last_step,
        )

    def summary(self, kind: str, values: Sequence[Any]) -> Summary:
        """The summary stored as ``values`` (of :attr:`summary_columns`); a counted scalar
        series whose ``last`` is NULL ended in NaN."""
        count, lo, hi, last, first_step, last_step = values[:6]
        if kind == "scalar" and count and last is None:
            last = math.nan
        return Summary(count, lo, hi, last, first_step, last_step)


#: The embedded store's SQLite.
SQLITE = Dialect(
    name="sqlite",
    param="?",
    greatest="MAX",
    least="MIN",
    row_order="rowid",
    meta_exists="SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
)
