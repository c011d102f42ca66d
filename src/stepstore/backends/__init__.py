"""Backends by URI scheme, from the schemes each backend class declares; database drivers
are imported only when a store of theirs is opened."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UnknownSchemeError
from .base import Backend
from .memory import MemoryBackend
from .mysql import MySQLBackend
from .postgresql import PostgresBackend
from .sqlite import SQLiteBackend

#: The backend classes, persistent stores first.
BACKENDS: tuple[type[Backend], ...] = (SQLiteBackend, PostgresBackend, MySQLBackend, MemoryBackend)
#: scheme -> "module:class"; a path without a scheme is the embedded SQLite store.
REGISTRY = {
    scheme: f"{cls.__module__}:{cls.__qualname__}" for cls in BACKENDS for scheme in cls.schemes
}
_CLASSES = {scheme: cls for cls in BACKENDS for scheme in cls.schemes}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


def open_backend(
    uri: str | Path, *, create: bool, stale_after: float = 60.0, fsync: bool = True
) -> Backend:
    """Open the backend that serves ``uri``; ``create`` makes the store if missing.

    Raises:
        UnknownSchemeError: No backend serves the URI's scheme; the message lists those
            that do, persistent stores first.
    """
    text = str(uri)
    match = _SCHEME.match(text)
    scheme, rest = (match.group(1).lower(), match.group(2)) if match else ("", text)
    cls = _CLASSES.get(scheme)
    if cls is None:
        order = sorted(_CLASSES, key=lambda s: (not _CLASSES[s].persistent, s))
        known = ", ".join(f"{s}://" for s in order if s) + " or a plain path"
        raise UnknownSchemeError(f"store URI {text!r}: unknown scheme {scheme!r}; known: {known}")
    return cls.from_uri(text, rest, create=create, stale_after=stale_after, fsync=fsync)


__all__ = ["BACKENDS", "REGISTRY", "Backend", "open_backend"]
