"""Where bulky arrays live: a local directory (default) or any fsspec URL.

Local files get incremental writes (``pwrite`` of one step's row onto the end of a chunk
file); object stores get whole-object writes. Writes of whole objects are atomic: on local
disks a temporary file is renamed into place, on object stores one ``PUT`` replaces the
object (readers see the old or the new bytes, never a mix).

The filesystem of a URL is configured the way fsspec configures it: for ``s3://`` (s3fs),
the endpoint, credentials and region come from the AWS environment (``AWS_ENDPOINT_URL_S3``
or ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``~/.aws``) or from fsspec's configuration
(``FSSPEC_S3_ENDPOINT_URL``, ``FSSPEC_S3='{"endpoint_url": ..., "key": ..., ...}'``,
``~/.config/fsspec/s3.json``), so the URL recorded with a run names only the bucket and
prefix, never a secret, and every reader configured alike finds the arrays.

``memory://NAME`` is this process's memory (the arrays of a ``memory://`` store): objects
are held in a dictionary of the process, nothing touches the disk, and nothing outlives
the process.

Errors: an object that does not exist raises :class:`~stepstore.errors.StoreError` (the
store is damaged); any other failure of an object store (a server that does not answer, a
refused credential, botocore's and aiohttp's errors) raises a ``StoreUnavailableError`` (a
``ConnectionError``) naming the object: nothing can be said about the object then, so the
writers retry and a repair must not take it for damage.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InvalidArgumentError, StoreError, StoreUnavailableError

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_T = TypeVar("_T")
#: Seconds a write of one object to an object store may take, plus one per MiB, before it
#: is abandoned with ``StoreUnavailableError``: botocore waits without end for the
#: ``100 Continue`` of a ``PUT`` when the network swallows every packet.
WRITE_TIMEOUT = 60.0


class ArrayLocation:
    """A root for array files: a local path or an fsspec URL such as ``s3://bucket/prefix``."""

    def __init__(self, url: str | os.PathLike[str]) -> None:
        text = os.fspath(url)
        match = _URL.match(text)
        self.url = text
        self.local = match is None or match.group(1) == "file"
        if self.local:
            self.root = Path(match.group(2) if match else text).expanduser()
            self._fs: Any = None
        else:
            self._fs, self._base = _filesystem(text)

    def _local(self, path: str) -> Path:
        return self.root / path

    def _remote(self, path: str) -> str:
        return f"{self._base.rstrip('/')}/{path}"

    def _call(self, what: str, path: str, call: Callable[..., _T], *args: Any, **kw: Any) -> _T:
        """``call(*args, **kw)`` on the remote filesystem; a failure other than a missing
        object is raised as a ``StoreUnavailableError`` naming the object."""
        try:
            return call(*args, **kw)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise StoreUnavailableError(
                f"array store: cannot {what} {self.describe(path)} ({type(exc).__name__}: {exc})"
            ) from exc

    def write(self, path: str, data: bytes) -> None:
        """Write a whole object atomically (replacing it); on an object store, within
        :data:`WRITE_TIMEOUT`."""
        if not self.local:
            timeout = WRITE_TIMEOUT + len(data) / (1 << 20)
            deadline = {"timeout": timeout} if getattr(self._fs, "async_impl", False) else {}
            try:
                self._call("write", path, self._fs.pipe_file, self._remote(path), data, **deadline)
            except FileNotFoundError as exc:  # no such bucket
                where = self.describe(path)
                raise StoreError(f"array store: cannot write {where}: {exc}") from None
            return
        target = self._local(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, target)

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        """Bytes of an object, or of ``size`` bytes from ``offset``."""
        try:
            if self.local:
                with open(self._local(path), "rb") as handle:
                    handle.seek(offset)
                    return handle.read() if size is None else handle.read(size)
            end = None if size is None else offset + size
            remote = self._remote(path)
            return self._call("read", path, self._fs.cat_file, remote, start=offset, end=end)
        except FileNotFoundError:
            raise StoreError(f"array file {self.describe(path)} is missing") from None

    def open_chunk(self, path: str) -> int:
        """A writable file descriptor of a new, empty local chunk file (one that a process
        left before indexing any of its rows is emptied)."""
        target = self._local(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        return os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def list(self, prefix: str) -> list[str]:
        """Paths of the objects under ``prefix``, relative to the root (listed afresh)."""
        if self.local:
            base = self._local(prefix)
            return (
                sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())
                if base.is_dir()
                else []
            )
        try:
            found = self._call("list", prefix, self._fs.find, self._remote(prefix))
        except FileNotFoundError:
            return []
        root = self._base.rstrip("/")
        return sorted(p.removeprefix(root).lstrip("/") for p in found)

    def local_path(self, path: str) -> Path:
        """The filesystem path of a local object."""
        return self._local(path)

    def exists(self, path: str) -> bool:
        """Whether an object exists."""
        if self.local:
            return self._local(path).exists()
        return self._call("look up", path, self._fs.exists, self._remote(path))

    def describe(self, path: str) -> str:
        """Human-readable location of an object, for messages."""
        return str(self._local(path)) if self.local else f"{self.url.rstrip('/')}/{path}"


class MemoryFiles:
    """The in-process file system of ``memory://`` URLs: whole objects by path, in the
    subset of fsspec's interface that :class:`ArrayLocation` uses."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def pipe_file(self, path: str, data: bytes) -> None:
        """Store ``data`` as the object ``path`` (replacing it)."""
        with self._lock:
            self._objects[path] = bytes(data)

    def cat_file(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``start:end`` of the object ``path``; ``FileNotFoundError`` if missing."""
        try:
            return self._objects[path][start:end]
        except KeyError:
            raise FileNotFoundError(path) from None

    def find(self, prefix: str) -> list[str]:
        """Paths of the objects under the folder ``prefix``."""
        folder = prefix.rstrip("/") + "/"
        with self._lock:
            return sorted(p for p in self._objects if p.startswith(folder))

    def exists(self, path: str) -> bool:
        """Whether the object ``path`` exists."""
        return path in self._objects

    def remove(self, prefix: str) -> None:
        """Forget the objects under the folder ``prefix`` (their memory is freed)."""
        folder = prefix.rstrip("/") + "/"
        with self._lock:
            for path in [p for p in self._objects if p.startswith(folder)]:
                del self._objects[path]


#: The objects of every ``memory://`` array store of this process (a ``fork()`` child gets
#: a copy of them, taken while no object is being written).
MEMORY = MemoryFiles()
os.register_at_fork(
    before=MEMORY._lock.acquire,
    after_in_parent=MEMORY._lock.release,
    after_in_child=MEMORY._lock.release,
)


def _filesystem(url: str) -> tuple[Any, str]:
    """The filesystem of ``url`` and the root path in it (no I/O yet): this process's
    memory for ``memory://``, else fsspec's."""
    if url.startswith("memory://"):
        return MEMORY, url.removeprefix("memory://")
    try:
        import fsspec

        return fsspec.core.url_to_fs(url)
    except ImportError as exc:  # fsspec itself, or the package of the URL's protocol
        raise InvalidArgumentError(
            f"array_store={url!r} needs a package that is not installed ({exc}); "
            "pip install 'stepstore[fsspec]' and the protocol's package (s3fs for s3://, "
            "gcsfs for gs://, adlfs for az://)"
        ) from None
    except ValueError as exc:
        raise InvalidArgumentError(f"array_store={url!r}: {exc}") from None
