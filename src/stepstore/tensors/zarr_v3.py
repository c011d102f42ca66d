"""Zarr v3 metadata documents (``zarr.json``) for the groups and arrays stepstore writes.

Each tensor series is a Zarr v3 group holding a ``steps`` array (int64, the step numbers
recorded) and one data array per shape segment (``s0``, ``s1``, ...; a new segment starts
when the logged shape changes), so zarr, xarray and dask read them directly.

A segment of codec ``"rows"`` stores each chunk as a Zarr shard (codec ``sharding_indexed``)
whose inner chunks are single rows: the shard index comes first, one ``(offset, nbytes)``
pair of little-endian uint64 per row (both all ones for a row not written yet), and row
``i`` lies at ``shard_header_bytes(chunk_steps) + i * row_bytes``. A chunk file thus holds
the rows written so far and no more, and stays a valid Zarr chunk while it grows.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .dtypes import DTYPES
from .index import Segment

STEPS_CHUNK = 65536
#: Bytes of one entry of a shard index: the offset and the size of an inner chunk.
SHARD_ENTRY_BYTES = 16
_EMPTY = np.uint64(2**64 - 1)


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
    *,
    sharded: bool = False,
) -> bytes:
    """``zarr.json`` of an array with a regular chunk grid, little-endian bytes, optional zstd;
    ``sharded``: each chunk a shard of single rows (see the module docstring)."""
    data_type = DTYPES[dtype][0]
    fill: Any = False if data_type == "bool" else (0.0 if data_type.startswith("float") else 0)
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if data_type in ("bool", "int8", "uint8"):
        codecs = [{"name": "bytes"}]
    if compressed:
        codecs.append({"name": "zstd", "configuration": {"level": 1, "checksum": False}})
    if sharded:
        shard = {
            "chunk_shape": [1, *chunk_shape[1:]],
            "codecs": codecs,
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "index_location": "start",
        }
        codecs = [{"name": "sharding_indexed", "configuration": shard}]
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


def segment_document(segment: Segment, rows: int, first_row: int) -> bytes:
    """``zarr.json`` of a segment's array holding ``rows`` rows, the first of which is row
    ``first_row`` of the series' ``steps`` array."""
    return array_document(
        (rows, *segment.shape),
        (segment.chunk_steps, *segment.shape),
        segment.dtype,
        segment.codec == "zstd",
        {"stepstore": {"first_row": first_row, "dtype": segment.dtype}},
        sharded=segment.codec == "rows",
    )


def shard_header_bytes(chunk_steps: int) -> int:
    """Size of the shard index at the start of a ``"rows"`` chunk file."""
    return SHARD_ENTRY_BYTES * chunk_steps


def shard_entries(first: int, count: int, row_bytes: int, chunk_steps: int) -> bytes:
    """The shard index entries of rows ``first .. first + count - 1`` of a ``"rows"`` chunk."""
    rows = np.arange(first, first + count, dtype=np.uint64)
    entries = np.empty((count, 2), "<u8")
    entries[:, 0] = shard_header_bytes(chunk_steps) + rows * np.uint64(row_bytes)
    entries[:, 1] = row_bytes
    return entries.tobytes()


def empty_shard_header(chunk_steps: int) -> bytes:
    """A shard index naming no row (every entry all ones)."""
    return np.full(2 * chunk_steps, _EMPTY, "<u8").tobytes()
