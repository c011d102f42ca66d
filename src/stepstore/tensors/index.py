"""Index records of tensor series, kept in the metadata store beside scalar chunks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """One shape segment of a tensor series: a Zarr v3 array ``path`` under the array root.

    ``codec`` is ``"raw"`` (rows written in place) or ``"zstd"`` (whole chunks compressed,
    the open one rewritten at each flush). Either way the index keeps a CRC-32 per row, so a
    chunk file newer than its index row (a flush cut short) still verifies.
    """

    series_id: int
    segment: int
    shape: tuple[int, ...]
    dtype: str
    chunk_steps: int
    codec: str
    path: str


@dataclass(frozen=True)
class ChunkIndex:
    """One chunk of a segment: which steps its rows hold, their epochs, times and checksums.

    ``steps``, ``epochs`` and ``times`` are little-endian int64 arrays (one entry per row),
    ``checksums`` little-endian uint32, the CRC-32 of each row's bytes.
    """

    series_id: int
    segment: int
    chunk: int
    first_step: int
    last_step: int
    count: int
    sealed: bool
    steps: bytes
    epochs: bytes
    times: bytes
    checksums: bytes
