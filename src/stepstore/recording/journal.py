"""The memory-mapped journal: where ``Run.log`` puts host scalars.

A journal is a fixed-size ring of 48-byte point records in a memory-mapped file, one per
run. The training thread writes a record with a single ``struct.pack_into`` and the record
is then in the kernel's page cache, so it survives the death of the process (SIGKILL, OOM
kill, a segfault) the moment ``log()`` returns. The writer thread drains records into
chunks; a crashed run's journal is replayed by the next process that opens the store.

Record layout (little-endian)::

    u32 key id | u32 flags | i64 step | i64 epoch | f64 time (s) | f64 value | u64 seq

``seq`` counts records from 1 and is written last, so a record torn by a kill, or left
over from an earlier lap of the ring, never carries the sequence number expected at its
slot (``seq % capacity``). Key names go to a small append-only side file (one JSON line
per key), written with ``os.write`` when a key is first seen.

The owning process holds an exclusive ``flock`` on the journal file: a journal whose lock
can be taken belongs to a process that died. Each rank recording into a run (``ranks="all"``)
has its own journal: ``RUN_ID.journal`` for rank 0, ``RUN_ID.rN.journal`` for rank N.

A store that keeps no journal (``backend.journal_dir is None``, ``memory://``) gets an
anonymous ring of the same layout (:meth:`Journal.in_memory`): no file, no recovery.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import RunStateError, StoreError
from ..series.chunk import Columns

RECORD = struct.Struct("<IIqqddQ")
RECORD_DTYPE = np.dtype(
    [
        ("key", "<u4"),
        ("flags", "<u4"),
        ("step", "<i8"),
        ("epoch", "<i8"),
        ("time", "<f8"),
        ("value", "<f8"),
        ("seq", "<u8"),
    ]
)
assert RECORD.size == RECORD_DTYPE.itemsize == 48

_MAGIC = b"SSJRNL01"
_HEADER = struct.Struct("<8sIIQ")
HEADER_SIZE = 4096
SUFFIX = ".journal"


class Layout(NamedTuple):
    """Where record ``seq`` goes, for a writer that packs records itself (``Run.log``):
    ``pack(buffer, base + (seq % capacity) * size, key_id, flags, step, epoch, time, value,
    seq)``."""

    pack: Callable[..., None]
    buffer: Any
    base: int
    size: int
    capacity: int


class Journal:
    """One run's ring of point records plus its key file; see the module docstring."""

    path: Path | None
    keys_path: Path | None
    _fd: int | None
    _keys_fd: int | None

    def __init__(self, path: Path, capacity: int, *, create: bool) -> None:
        self.path = path
        self.keys_path = path.with_suffix(".keys")
        if create:
            fd = _create_locked(path, capacity)
        else:
            fd = os.open(path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise
        try:
            if not create:
                magic, _, size, capacity = _HEADER.unpack(os.pread(fd, _HEADER.size, 0))
                if magic != _MAGIC or size != RECORD.size:
                    raise StoreError(f"{path}: not a stepstore journal")
            self.capacity = capacity
            self.mm = mmap.mmap(fd, HEADER_SIZE + capacity * RECORD.size)
            self._slots = np.frombuffer(self.mm, RECORD_DTYPE, capacity, HEADER_SIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._keys_fd = os.open(
            self.keys_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC if create else 0)
        )

    @classmethod
    def in_memory(cls, capacity: int) -> Journal:
        """A journal held in anonymous memory: the same ring, no file and no key file, so
        nothing survives the process (for stores without a journal directory)."""
        journal = cls.__new__(cls)
        journal.path = journal.keys_path = None
        journal._fd = journal._keys_fd = None
        journal.capacity = capacity
        journal.mm = mmap.mmap(-1, HEADER_SIZE + capacity * RECORD.size)
        journal._slots = np.frombuffer(journal.mm, RECORD_DTYPE, capacity, HEADER_SIZE)
        return journal

    @classmethod
    def for_run(
        cls, directory: Path | None, run_id: str, name: str, capacity: int, rank: int
    ) -> Journal:
        """The journal a run's ``rank`` records into: created and locked in the store's
        journal ``directory``, or an anonymous ring for a store that keeps none.

        Raises ``RunStateError`` when another process created it at the same moment and
        ``StoreError`` when it cannot be created (a full disk, a read-only directory).
        """
        if directory is None:
            return cls.in_memory(capacity)
        try:
            return cls.create(directory, run_id, capacity, rank)
        except FileExistsError:
            raise RunStateError(
                f"run {name} ({run_id}) rank {rank}: another process started "
                "recording it at the same moment; one process records a run at a time"
            ) from None
        except OSError as exc:  # a full disk, a read-only journal directory
            raise StoreError(
                f"run {name} ({run_id}): cannot create its journal in {directory} ({exc})"
            ) from exc

    @classmethod
    def create(cls, directory: Path, run_id: str, capacity: int, rank: int = 0) -> Journal:
        """Create the journal of ``run_id``'s ``rank`` in ``directory``, locked by us.

        Raises ``FileExistsError`` if that journal exists: another process records the
        run, or one that died left it for recovery."""
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / journal_name(run_id, rank), capacity, create=True)

    @classmethod
    def claim_orphan(cls, path: Path) -> Journal | None:
        """Open a journal whose owner died; ``None`` while a live process holds it."""
        try:
            return cls(path, 0, create=False)
        except (BlockingIOError, FileNotFoundError):
            return None

    def offset(self, seq: int) -> int:
        """Byte offset in the mapping of the slot that holds record ``seq``."""
        return HEADER_SIZE + (seq % self.capacity) * RECORD.size

    def layout(self) -> Layout:
        """How to pack record ``seq`` into the mapping directly (see :class:`Layout`)."""
        return Layout(RECORD.pack_into, self.mm, HEADER_SIZE, RECORD.size, self.capacity)

    def add_key(self, key_id: int, key: str, kind: str) -> None:
        """Record a key's id and name durably (against process death) before its points."""
        if self._keys_fd is not None:
            line = json.dumps({"id": key_id, "key": key, "kind": kind}) + "\n"
            os.write(self._keys_fd, line.encode())

    def keys(self) -> dict[int, tuple[str, str]]:
        """The key ids recorded so far, each with its name and kind; a torn last line is skipped."""
        found: dict[int, tuple[str, str]] = {}
        if self.keys_path is None:
            return found
        for line in self.keys_path.read_bytes().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            found[entry["id"]] = (entry["key"], entry["kind"])
        return found

    def read(self, first: int, stop: int) -> np.ndarray:
        """Copy of the records with ``first <= seq < stop`` (at most one lap of the ring)."""
        start, end = first % self.capacity, (first % self.capacity) + (stop - first)
        if end <= self.capacity:
            return self._slots[start:end].copy()
        return np.concatenate([self._slots[start:], self._slots[: end - self.capacity]])

    def discard(self, first: int, stop: int) -> None:
        """Void the records with ``first <= seq < stop`` (written by a ``log()`` that then
        raised), so that recovery never replays them."""
        for seq in range(first, stop):
            self._slots["seq"][seq % self.capacity] = 0

    def valid_after(self, committed: int) -> np.ndarray:
        """Records after ``committed`` that were completely written, in order (recovery)."""
        expected = np.arange(committed + 1, committed + 1 + self.capacity, dtype=np.int64)
        found = self._slots["seq"][expected % self.capacity].astype(np.int64)
        mismatch = np.flatnonzero(found != expected)
        count = int(mismatch[0]) if len(mismatch) else self.capacity
        return self.read(committed + 1, committed + 1 + count)

    def close(self, remove: bool = False) -> None:
        """Unmap and unlock; with ``remove`` delete the journal and key files first."""
        if remove and self.path is not None and self.keys_path is not None:
            self.path.unlink(missing_ok=True)
            self.keys_path.unlink(missing_ok=True)
        del self._slots
        self.mm.close()
        for fd in (self._keys_fd, self._fd):
            if fd is not None:
                os.close(fd)


def _create_locked(path: Path, capacity: int) -> int:
    """A new journal file at ``path``, open and locked by us. It is made under a temporary
    name and renamed, so a process looking for orphans never finds it unlocked or without
    its header."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # allocated, not sparse: a full disk fails here, not as SIGBUS in log()
        os.posix_fallocate(fd, 0, HEADER_SIZE + capacity * RECORD.size)
        os.pwrite(fd, _HEADER.pack(_MAGIC, 1, RECORD.size, capacity), 0)
        os.link(temporary, path)  # FileExistsError while a journal is there: one per run
    except BaseException:
        os.close(fd)
        raise
    finally:
        temporary.unlink(missing_ok=True)
    return fd


def is_held(path: Path) -> bool:
    """Whether a live process holds the journal at ``path`` (it exists and is locked)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def journal_name(run_id: str, rank: int = 0) -> str:
    """File name of the journal of ``run_id``'s ``rank`` (run ids hold no dots)."""
    return f"{run_id}{SUFFIX}" if rank == 0 else f"{run_id}.r{rank}{SUFFIX}"


def journal_owner(path: Path) -> tuple[str, int]:
    """The run id and rank a journal file belongs to."""
    run_id, _, rank = path.name.removesuffix(SUFFIX).partition(".r")
    return run_id, int(rank) if rank.isdigit() else 0


def journal_paths(directory: Path | None) -> list[Path]:
    """The journal files in ``directory`` (none for a store that keeps no journal)."""
    if directory is None or not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{SUFFIX}"))


def journal_columns(records: np.ndarray) -> tuple[np.ndarray, Columns]:
    """Key ids and columns of journal records (time converted to µs)."""
    return records["key"].astype(np.int64), Columns(
        records["step"].copy(),
        records["epoch"].copy(),
        np.round(records["time"] * 1e6).astype(np.int64),
        records["value"].copy(),
    )
