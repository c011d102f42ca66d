"""A store held in this process's memory: ``memory://NAME``, or ``memory://`` alone for a
fresh anonymous one.

The engine on an in-memory SQLite database; tensors, images and artifacts go to the
in-process file system of ``memory://`` array URLs (see ``tensors/location.py``), and no
journal is kept. Nothing is written to disk and nothing survives the process: its
durability is none. Every open of one name in a process shares one connection (and its
lock), kept for the life of the process, so a store that a run recorded into is there for
``stepstore.open("memory://NAME")`` after the run finished.

Another process, the CLI included, finds no memory store of that name (``NotAStoreError``
saying memory stores live in one process). A ``fork()`` child gets a copy of every memory
store as it was at the fork (no statement is under way then: the fork waits for them): it
reads what the parent recorded before, and what either process writes afterwards the
other never sees.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidArgumentError, NotAStoreError
from ..tensors.location import MEMORY
from .sqlite import SQLiteEngine, driver

if TYPE_CHECKING:
    import sqlite3

#: Named stores of this process: name -> (connection, its lock).
_STORES: dict[str, tuple[sqlite3.Connection, threading.RLock]] = {}
_STORES_LOCK = threading.Lock()


class MemoryBackend(SQLiteEngine):
    """A store in this process's memory (``memory://NAME``; ``memory://``: anonymous)."""

    schemes = ("memory",)
    persistent = False

    def __init__(
        self, name: str, *, create: bool, stale_after: float = 60.0, fsync: bool = True
    ) -> None:
        if "/" in name or "?" in name:
            raise InvalidArgumentError(
                f"store URI memory://{name}: expected memory://NAME (a name without / or ?)"
            )
        self.anonymous = not name
        self.name = name or f"anonymous-{uuid.uuid4().hex}"
        self.uri = f"memory://{name}"
        self.stale_after = stale_after
        with _STORES_LOCK:
            found = _STORES.get(self.name)
            if found is None:
                if not (create or self.anonymous):
                    raise NotAStoreError(
                        f"{self.uri}: not a stepstore store (none of this name in this "
                        "process; memory stores live in one process: the one that created "
                        "them, until it ends); record into it with "
                        f"stepstore.init(store={self.uri!r}) in this process first, and "
                        "stepstore.copy() it to a lasting store"
                    )
                db = driver().connect(":memory:", isolation_level=None, check_same_thread=False)
                self._setup(db, fsync=False, label=self.uri)
                if not self.anonymous:
                    _STORES[self.name] = (db, self._lock)
            else:
                self._db, self._lock, self._label = found[0], found[1], self.uri

    @property
    def journal_dir(self) -> Path | None:
        return None

    @property
    def default_array_store(self) -> str:
        return f"memory://stepstore-{self.name}"

    def close(self) -> None:
        """Let go of an anonymous store, its arrays included (a named one lives as long as
        the process)."""
        if self.anonymous:
            super().close()
            MEMORY.remove(self.default_array_store.removeprefix("memory://"))


def _hold_stores() -> None:
    """Before a fork: wait for every statement on a memory store to end, and hold them."""
    _STORES_LOCK.acquire()
    for _, lock in _STORES.values():
        lock.acquire()


def _release_stores() -> None:
    """After a fork, in parent and child: let the stores be used again."""
    for _, lock in _STORES.values():
        lock.release()
    _STORES_LOCK.release()


os.register_at_fork(
    before=_hold_stores, after_in_parent=_release_stores, after_in_child=_release_stores
)
