"""Zarr v3 metadata documents (``zarr.json``) for the groups and arrays stepstore writes.

Each tensor series is a Zarr v3 group holding a ``steps`` array (int64, the step numbers
recorded) and one data array per shape segment (``s0``, ``s1``, ...; a new segment starts
when the logged shape changes), so zarr, xarray and dask read them directly.
"""

from __future__ import annotations

import json
from typing import Any

from .dtypes import DTYPES

STEPS_CHUNK = 65536


def group_document(attributes: dict[str, Any]) -> bytes:
    """``zarr.json`` of a group."""
    return json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": attributes}, indent=1
    ).encode()


def array_document(
    shape: tuple[int, ...],
    chunk_shape: tuple[int, ...],
    dtype: str,
    compressed: bool,
    attributes: dict[str, Any] | None = None,
) -> bytes:
    """``zarr.json`` of an array with a regular chunk grid, little-endian bytes, optional zstd."""
    data_type = DTYPES[dtype][0]
    fill: Any = False if data_type == "bool" else (0.0 if data_type.startswith("float") else 0)
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if data_type in ("bool", "int8", "uint8"):
        codecs = [{"name": "bytes"}]
    if compressed:
        codecs.append({"name": "zstd", "configuration": {"level": 1, "checksum": False}})
    return json.dumps(
        {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(shape),
            "data_type": data_type,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk_shape)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": fill,
            "codecs": codecs,
            "attributes": attributes or {},
            "dimension_names": ["step", *(f"dim_{i}" for i in range(len(shape) - 1))],
        },
        indent=1,
    ).encode()


def chunk_key(index: int, ndim: int) -> str:
    """Key of the chunk holding rows ``index * chunk_steps ...`` of an ``ndim``-d array."""
    return "c/" + "/".join([str(index), *["0"] * (ndim - 1)])
