"""TFRecord framing (TensorBoard's event files), read and written with CRC32C checks.

A file is a sequence of records::

    u64 length | u32 masked CRC32C of the 8 length bytes | data | u32 masked CRC32C of data

(little-endian; the mask is TFRecord's: the CRC rotated right by 15 bits plus 0xa282ead8).
Reading checks both CRCs of every record. The CRCs of many records of one length are
computed together with NumPy (a table lookup per byte across all of them); the rest one
by one with ``google_crc32c`` (C), or TensorBoard's pure-Python CRC where it is missing.

Damage does not stop a read: a record whose data fails its CRC is skipped and reading goes
on with the next (its length was intact); a length that fails its CRC, or a record cut
short by the end of the file, ends the readable part, and the bytes after it are reported.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_U32 = struct.Struct("<I")
#: Bytes of framing around each record's data: length, its CRC, and the data's CRC.
OVERHEAD = 16
#: A length group is checked with NumPy when it has at least this many records ...
_VECTOR_MIN_RECORDS = 16
#: ... of at most this many bytes each (one NumPy pass per byte of the record).
_VECTOR_MAX_BYTES = 1024
_BAD_LENGTH = "the record length fails its CRC; the rest of the file cannot be framed"
#: Rows per NumPy block, so the gathered bytes stay a few MB.
_BLOCK_ROWS = 1 << 16


def _table() -> np.ndarray:
    """The byte-wise CRC32C (Castagnoli, reflected 0x82f63b78) lookup table."""
    crc = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        crc = np.where(crc & 1, (crc >> 1) ^ np.uint32(0x82F63B78), crc >> 1).astype(np.uint32)
    return crc


_TABLE = _table()


def _single_crc() -> Callable[[bytes], int]:
    """The fastest CRC32C of one buffer that is installed."""
    try:
        import google_crc32c

        return google_crc32c.value  # type: ignore[no-any-return]
    except ImportError:  # pragma: no cover - google-crc32c comes with zarr and the compat extra
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c

        return crc32c  # type: ignore[no-any-return]


_crc32c: Callable[[bytes], int] | None = None


def crc32c(data: bytes) -> int:
    """CRC32C of ``data``."""
    global _crc32c
    if _crc32c is None:
        _crc32c = _single_crc()
    return _crc32c(bytes(data))


def mask(crc: int) -> int:
    """TFRecord's masked form of a CRC32C."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """The masked CRC32C TFRecord stores after ``data``."""
    return mask(crc32c(data))


def _masked_rows(rows: np.ndarray) -> np.ndarray:
    """Masked CRC32C of each row of a 2-d uint8 array, all rows at once."""
    crc = np.full(len(rows), 0xFFFFFFFF, np.uint32)
    table = _TABLE
    for column in rows.T:
        crc = table[(crc ^ column) & 0xFF] ^ (crc >> 8)
    crc ^= np.uint32(0xFFFFFFFF)
    return (((crc >> 15) | (crc << 17)) + np.uint32(_MASK_DELTA)).astype(np.uint32)


def gather(buffer: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Rows of ``width`` bytes of ``buffer`` from each of ``starts``, as a 2-d uint8 array."""
    return np.lib.stride_tricks.sliding_window_view(buffer, width)[starts]


@dataclass(frozen=True)
class Damage:
    """A part of a file that could not be read: where it starts, how long, and why."""

    offset: int
    size: int
    reason: str

    def __str__(self) -> str:
        return f"{self.size} bytes at offset {self.offset}: {self.reason}"


@dataclass
class Records:
    """The records of one file: its bytes, where each record's data starts and how long it
    is (in file order), and the damage found."""

    data: bytes
    starts: np.ndarray
    lengths: np.ndarray
    damage: list[Damage] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.starts)

    def record(self, index: int) -> bytes:
        """The data of record ``index``."""
        start = int(self.starts[index])
        return self.data[start : start + int(self.lengths[index])]


def _frames(data: bytes) -> tuple[list[int], int]:
    """Record positions and lengths as the length fields say, and where they stop making
    sense (the end of the data, or a record running past it)."""
    starts: list[int] = []
    add = starts.append
    unpack = _LENGTH.unpack_from
    position, end = 0, len(data)
    while position + 12 <= end:
        length = unpack(data, position)[0]
        if position + length + OVERHEAD > end:
            break
        add(position)
        position += length + OVERHEAD
    return starts, position


def _bad_headers(buffer: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """Indices of the records whose length fails its CRC."""
    bad = np.zeros(len(heads), bool)
    for a in range(0, len(heads), _BLOCK_ROWS):
        rows = gather(buffer, heads[a : a + _BLOCK_ROWS], 12)
        expected = rows[:, 8:].copy().view("<u4").reshape(-1)
        bad[a : a + _BLOCK_ROWS] = _masked_rows(rows[:, :8]) != expected
    return np.flatnonzero(bad)


def _bad_data(
    data: bytes, buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Indices of the records whose data fails its CRC."""
    bad = np.zeros(len(starts), bool)
    expected = gather(buffer, starts + lengths, 4).view("<u4").reshape(-1)
    sizes, inverse, counts = np.unique(lengths, return_inverse=True, return_counts=True)
    for group, (size, count) in enumerate(zip(sizes.tolist(), counts.tolist(), strict=True)):
        members = np.flatnonzero(inverse == group)
        if count >= _VECTOR_MIN_RECORDS and size <= _VECTOR_MAX_BYTES:
            for a in range(0, count, _BLOCK_ROWS):
                block = members[a : a + _BLOCK_ROWS]
                got = _masked_rows(gather(buffer, starts[block], size))
                bad[block] = got != expected[block]
        else:
            for i in members.tolist():
                start = int(starts[i])
                bad[i] = masked_crc(data[start : start + size]) != int(expected[i])
    return np.flatnonzero(bad)


def read_records(data: bytes) -> Records:
    """Split the bytes of a TFRecord file into checked records (see the module docstring)."""
    buffer = np.frombuffer(data, np.uint8)
    starts_list, stop = _frames(data)
    heads = np.asarray(starts_list, np.int64)
    lengths = np.empty(0, np.int64)
    if len(heads):
        lengths = gather(buffer, heads, 8).view("<u8").reshape(-1).astype(np.int64)
    damage: list[Damage] = []
    bad_head = _bad_headers(buffer, heads) if len(heads) else np.empty(0, np.int64)
    if len(bad_head):
        first = int(bad_head[0])
        stop = int(heads[first])
        heads, lengths = heads[:first], lengths[:first]
        damage.append(Damage(stop, len(data) - stop, _BAD_LENGTH))
    elif stop < len(data):
        head = data[stop : stop + 12]
        bad_length = len(head) == 12 and masked_crc(head[:8]) != _U32.unpack_from(head, 8)[0]
        reason = _BAD_LENGTH if bad_length else "truncated: the file ends inside a record"
        damage.append(Damage(stop, len(data) - stop, reason))
    starts = heads + 12
    bad = _bad_data(data, buffer, starts, lengths) if len(starts) else np.empty(0, np.int64)
    for i in bad.tolist():
        damage.append(
            Damage(int(heads[i]), int(lengths[i]) + OVERHEAD, "the record's data fails its CRC")
        )
    damage.sort(key=lambda d: d.offset)
    if len(bad):
        keep = np.ones(len(starts), bool)
        keep[bad] = False
        starts, lengths = starts[keep], lengths[keep]
    return Records(data, starts, lengths, damage)


def frame(data: bytes) -> bytes:
    """One record: ``data`` with its length, and both masked CRCs."""
    head = struct.pack("<Q", len(data))
    return head + _U32.pack(masked_crc(head)) + data + _U32.pack(masked_crc(data))


def write_records(out: BinaryIO, records: list[bytes]) -> int:
    """Write ``records`` framed to ``out``; returns the bytes written."""
    payload = b"".join(frame(r) for r in records)
    out.write(payload)
    return len(payload)
