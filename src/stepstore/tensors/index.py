"""Index records of tensor series, kept in the metadata store beside scalar chunks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    """One shape segment of a tensor series: a Zarr v3 array ``path`` under the array root.

    ``codec`` is ``"rows"`` (rows written in place onto the end of a chunk file that is a
    Zarr shard of single rows, local disks), ``"zstd"`` (whole chunks compressed, the open
    one rewritten at each flush) or, in stores written before ``"rows"``, ``"raw"`` (rows
    written in place into a chunk file pre-sized to the whole chunk, sparse). Either way the
    index keeps a CRC-32 per row, so a chunk file newer than its index row (a flush cut
    short) still verifies.
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
    ``checksums`` little-endian uint32, the CRC-32 of each row's bytes. ``positions`` says
    where in the chunk each row lies (little-endian int64, ascending); it is empty while the
    rows are the chunk's first ``count`` ones, as written, and is set when ``check --repair``
    drops damaged rows from the middle of a chunk.
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
    positions: bytes = b""

    def row_positions(self) -> np.ndarray:
        """The position in the chunk of each row, as int64."""
        if not self.positions:
            return np.arange(self.count, dtype=np.int64)
        return np.frombuffer(self.positions, "<i8").astype(np.int64)

    def damage(self, chunk_steps: int) -> str | None:
        """Why this index row cannot describe its rows (columns of the wrong length, first
        and last step that are not those of its rows, positions out of order or outside a
        chunk of ``chunk_steps`` rows), or None when it is consistent."""
        sizes = {"steps": 8, "epochs": 8, "times": 8, "checksums": 4}
        if self.positions:
            sizes["positions"] = 8
        for name, size in sizes.items():
            length = len(getattr(self, name))
            if length != size * self.count:
                return f"its {name} hold {length} bytes for {self.count} row(s)"
        if self.count < 1 or self.count > chunk_steps:
            return f"it counts {self.count} row(s) in a chunk of {chunk_steps}"
        steps = np.frombuffer(self.steps, "<i8")
        if (int(steps[0]), int(steps[-1])) != (self.first_step, self.last_step):
            return (
                f"its first and last step ({self.first_step}, {self.last_step}) are not "
                f"those of its rows ({steps[0]}, {steps[-1]})"
            )
        positions = self.row_positions()
        if positions[0] < 0 or positions[-1] >= chunk_steps or np.any(np.diff(positions) <= 0):
            return f"its row positions are not ascending within a chunk of {chunk_steps}"
        return None
