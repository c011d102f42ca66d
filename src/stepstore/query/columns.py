"""Columns of JSON-like values (params, record fields) as typed pandas and Arrow columns.

One rule for every such column, so a frame, a DuckDB relation and a Parquet file agree:
``None`` is missing; when every other value is a bool the column is boolean, when each is an
int (that fits int64) it is integer, when each is an int or a float it is float64, when
each is a string it is a string column; anything else (lists, dicts, a mix of types) is a
``json`` column: in pandas the values as they are, in Arrow their JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

_INT64 = (-(2**63), 2**63 - 1)


def value_kind(values: Sequence[Any]) -> str:
    """``"bool"``, ``"int"``, ``"float"``, ``"str"`` or ``"json"``: the type of the column
    holding ``values`` (see the module docstring); ``"str"`` when all are missing."""
    present = [v for v in values if v is not None]
    if not present or all(isinstance(v, str) for v in present):
        return "str"
    if all(isinstance(v, bool) for v in present):
        return "bool"
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in present):
        return "json"
    if all(isinstance(v, int) for v in present):
        return "int" if all(_INT64[0] <= v <= _INT64[1] for v in present) else "json"
    return "float"


def pandas_column(values: Sequence[Any]) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """``values`` as a pandas column: ``boolean``, ``Int64``, float64 (NaN where missing),
    or object (strings, or JSON-like values as they are)."""
    import pandas as pd

    kind = value_kind(values)
    if kind == "bool":
        return pd.array(list(values), "boolean")
    if kind == "int":
        return pd.array(list(values), "Int64")
    if kind == "float":
        return np.array([np.nan if v is None else float(v) for v in values], np.float64)
    column = np.empty(len(values), object)
    column[:] = list(values)
    return column


def arrow_column(values: Sequence[Any]) -> pa.Array:
    """``values`` as an Arrow array: bool, int64, float64 or string (JSON text for ``json``
    columns); ``None`` is null."""
    import pyarrow as pa

    kind = value_kind(values)
    if kind == "json":
        return pa.array([None if v is None else _json(v) for v in values], pa.string())
    types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    return pa.array(list(values), types[kind])


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
