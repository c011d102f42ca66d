"""Comparison tables (``runs``, ``diff``): columns that fit the width, the rest named."""

from __future__ import annotations

from typing import Any, NamedTuple

from rich import box
from rich.cells import cell_len
from rich.table import Table

from .output import plain

#: Cells wider than their header's first this many characters let the header fold.
_MIN_HEADER = 8
#: Characters between two columns of a comparison table.
_GAP = 2


class Column(NamedTuple):
    """A column of a comparison table: its header, its cells, whether they are numbers
    (right-aligned) and whether they may wrap over lines (else they are never cut)."""

    header: str
    cells: list[str]
    numeric: bool = False
    wrap: bool = False

    @property
    def width(self) -> int:
        """The width the column takes: its widest cell or header line; a wrapping column's
        header may fold down to its cells' width (at least :data:`_MIN_HEADER`)."""
        widest = max(map(cell_len, self.cells), default=0)
        header = max(map(cell_len, self.header.splitlines()), default=0)
        return max(widest, min(header, max(widest, _MIN_HEADER)) if self.wrap else header)


def compact_table(columns: list[Column], width: int) -> Table:
    """A table without vertical lines of ``columns``: the first that fit in ``width``;
    the rest are left out, named in the caption."""
    shown: list[Column] = []
    used = -_GAP
    for column in columns:
        if shown and used + _GAP + column.width > width:
            break
        shown.append(column)
        used += _GAP + column.width
    left = [c.header.replace("\n", ":") for c in columns[len(shown) :]]
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        caption=f"not shown (too wide): {', '.join(left)}" if left else None,
        caption_justify="left",
    )
    for column in shown:
        table.add_column(
            column.header,
            justify="right" if column.numeric else "left",
            no_wrap=not column.wrap,
            overflow="fold",
        )
    for row in zip(*(c.cells for c in shown), strict=True):
        table.add_row(*row)
    return table


def param_cell(params: dict[str, Any], path: str) -> str:
    """A table cell for the param ``path`` of flattened ``params``; ``-`` when absent."""
    return plain(params[path]) if path in params else "-"
