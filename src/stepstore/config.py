"""One frozen configuration: keyword arguments > ``STEPSTORE_*`` environment > defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import InvalidArgumentError

DEFAULT_STORE = "./stepstore"


@dataclass(frozen=True)
class Config:
    """Settings of a run's recorder and its store.

    Attributes:
        store: Store path or URI (``$STEPSTORE_URI``, else ``./stepstore``).
        flush_interval: Seconds between writer flushes; tensors, device values and a
            machine crash lose at most this much (``$STEPSTORE_FLUSH_INTERVAL``).
        chunk_size: Points per sealed scalar chunk (``$STEPSTORE_CHUNK_SIZE``).
        journal_slots: Capacity of the memory-mapped journal, in points; a full journal
            makes ``log()`` wait for the writer (``$STEPSTORE_JOURNAL_SLOTS``).
        on_error: ``"raise"`` re-raises writer errors on the next call, ``"warn"`` turns
            them into warnings (``$STEPSTORE_ON_ERROR``).
        fsync: Whether each flush is made durable against a machine crash
            (``$STEPSTORE_FSYNC``, ``0`` or ``1``).
        stale_after: Seconds without a heartbeat after which a ``running`` run is shown
            as ``crashed`` (``$STEPSTORE_STALE_AFTER``).
        tensor_queue_bytes: Bytes of staged tensors and images the array writer may hold;
            beyond it ``log()`` waits (``$STEPSTORE_TENSOR_QUEUE_BYTES``).
        ranks: In a distributed job, ``"zero"`` records rank 0 only (the other ranks' calls
            do nothing); ``"all"`` records every rank, each point carrying its rank
            (``$STEPSTORE_RANKS``).
        rank_wait: Seconds a non-zero rank waits for rank 0 to create the shared run
            (``$STEPSTORE_RANK_WAIT``).
        journal_dir: Directory under which a server store's runs keep their local journals
            (``$STEPSTORE_JOURNAL_DIR``; ``None``: the user's cache directory).
        array_store: Where a server store's runs keep tensors, images and artifacts unless
            a run names another place (``$STEPSTORE_ARRAY_STORE``; ``None``: the user's data
            directory).
    """

    store: str = DEFAULT_STORE
    flush_interval: float = 1.0
    chunk_size: int = 8192
    journal_slots: int = 1 << 18
    on_error: str = "raise"
    fsync: bool = True
    stale_after: float = 60.0
    tensor_queue_bytes: int = 256 << 20
    ranks: str = "zero"
    rank_wait: float = 300.0
    journal_dir: str | None = None
    array_store: str | None = None

    def __post_init__(self) -> None:
        if not self.flush_interval > 0:
            raise InvalidArgumentError(
                f"flush_interval={self.flush_interval!r}: expected a positive number of seconds"
            )
        if not 16 <= self.chunk_size <= 1 << 20:
            raise InvalidArgumentError(
                f"chunk_size={self.chunk_size!r}: expected an integer in [16, 1048576]"
            )
        if not 1024 <= self.journal_slots <= 1 << 26:
            raise InvalidArgumentError(
                f"journal_slots={self.journal_slots!r}: expected an integer in [1024, 67108864]"
            )
        if self.on_error not in ("raise", "warn"):
            raise InvalidArgumentError(f"on_error={self.on_error!r}: expected 'raise' or 'warn'")
        if self.tensor_queue_bytes < 1 << 20:
            raise InvalidArgumentError(
                f"tensor_queue_bytes={self.tensor_queue_bytes!r}: expected at least 1048576"
            )
        if not self.stale_after > 0:
            raise InvalidArgumentError(
                f"stale_after={self.stale_after!r}: expected a positive number of seconds"
            )
        if self.ranks not in ("zero", "all"):
            raise InvalidArgumentError(f"ranks={self.ranks!r}: expected 'zero' or 'all'")
        if not self.rank_wait >= 0:
            raise InvalidArgumentError(
                f"rank_wait={self.rank_wait!r}: expected a number of seconds >= 0"
            )


_ENV = {
    "store": "STEPSTORE_URI",
    "flush_interval": "STEPSTORE_FLUSH_INTERVAL",
    "chunk_size": "STEPSTORE_CHUNK_SIZE",
    "journal_slots": "STEPSTORE_JOURNAL_SLOTS",
    "on_error": "STEPSTORE_ON_ERROR",
    "fsync": "STEPSTORE_FSYNC",
    "stale_after": "STEPSTORE_STALE_AFTER",
    "tensor_queue_bytes": "STEPSTORE_TENSOR_QUEUE_BYTES",
    "ranks": "STEPSTORE_RANKS",
    "rank_wait": "STEPSTORE_RANK_WAIT",
    "journal_dir": "STEPSTORE_JOURNAL_DIR",
    "array_store": "STEPSTORE_ARRAY_STORE",
}


def _from_env(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Config)}[name]
    try:
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
        if kind == "bool":
            if raw.strip().lower() not in ("0", "1", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.strip().lower() in ("1", "true", "yes")
    except ValueError:
        raise InvalidArgumentError(
            f"${_ENV[name]}={raw!r}: expected a value of type {kind}"
        ) from None
    return raw


def load_config(**overrides: Any) -> Config:
    """Build the configuration from keyword arguments, the environment and defaults.

    Arguments whose value is ``None`` are treated as not given.
    """
    unknown = set(overrides) - set(_ENV)
    if unknown:
        raise InvalidArgumentError(
            f"unknown setting(s) {sorted(unknown)}: expected some of {sorted(_ENV)}"
        )
    values: dict[str, Any] = {}
    for name, var in _ENV.items():
        raw = os.environ.get(var)
        if raw:
            values[name] = _from_env(name, raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return replace(Config(), **values)
