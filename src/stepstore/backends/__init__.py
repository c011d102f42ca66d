"""Backends by URI scheme; drivers are imported only when their scheme is used."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from ..errors import UnknownSchemeError
from .base import Backend

#: scheme -> "module:class"; a path without a scheme is the embedded SQLite store.
REGISTRY = {
    "": "stepstore.backends.sqlite:SQLiteBackend",
    "file": "stepstore.backends.sqlite:SQLiteBackend",
    "sqlite": "stepstore.backends.sqlite:SQLiteBackend",
    "postgresql": "stepstore.backends.postgresql:PostgresBackend",
    "postgres": "stepstore.backends.postgresql:PostgresBackend",
    "mysql": "stepstore.backends.mysql:MySQLBackend",
    "mariadb": "stepstore.backends.mysql:MySQLBackend",
}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


def open_backend(
    uri: str | Path, *, create: bool, stale_after: float = 60.0, fsync: bool = True
) -> Backend:
    """Open the backend that serves ``uri``; ``create`` makes an embedded store if missing."""
    text = str(uri)
    match = _SCHEME.match(text)
    scheme, rest = (match.group(1).lower(), match.group(2)) if match else ("", text)
    target = REGISTRY.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(REGISTRY) if s) + " or a plain path"
        raise UnknownSchemeError(f"store URI {text!r}: unknown scheme {scheme!r}; known: {known}")
    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    location = rest if cls.__name__ == "SQLiteBackend" else text
    return cls(location, create=create, stale_after=stale_after, fsync=fsync)


__all__ = ["REGISTRY", "Backend", "open_backend"]
