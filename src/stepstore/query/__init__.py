"""Reading stores: ``open()``, Store, RunView, the filter language and downsampling."""

from __future__ import annotations

import os

from ..backends import open_backend
from ..config import load_config
from ..recording.recovery import recover_orphans
from .views import RunView, Store


def open(store: str | os.PathLike[str] | None = None) -> Store:  # noqa: A001 - public API name
    """Open an existing store for reading (``None``: ``$STEPSTORE_URI`` or ``./stepstore``).

    Runs left behind by processes that died are recovered first, so their last points are
    visible. Raises ``NotAStoreError`` when there is no store at that location.
    """
    config = load_config(store=None if store is None else os.fspath(store))
    backend = open_backend(
        config.store, create=False, stale_after=config.stale_after, fsync=config.fsync
    )
    recover_orphans(backend, config.chunk_size)
    return Store(backend)


__all__ = ["RunView", "Store", "open"]
