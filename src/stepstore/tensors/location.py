"""Where bulky arrays live: a local directory (default) or any fsspec URL.

Local files get incremental writes (``pwrite`` of one step's row into a pre-sized chunk
file); object stores get whole-object writes. Writes of whole objects are atomic on local
disks (a temporary file renamed into place).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, StoreError

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


class ArrayLocation:
    """A root for array files: a local path or an fsspec URL such as ``memory://x``."""

    def __init__(self, url: str | os.PathLike[str]) -> None:
        text = os.fspath(url)
        match = _URL.match(text)
        self.url = text
        self.local = match is None or match.group(1) == "file"
        if self.local:
            self.root = Path(match.group(2) if match else text).expanduser()
            self._fs: Any = None
        else:
            try:
                import fsspec
            except ImportError:
                raise InvalidArgumentError(
                    f"array_store={text!r} needs fsspec: pip install fsspec"
                ) from None
            self._fs, self._base = fsspec.core.url_to_fs(text)

    def _local(self, path: str) -> Path:
        return self.root / path

    def _remote(self, path: str) -> str:
        return f"{self._base.rstrip('/')}/{path}"

    def write(self, path: str, data: bytes) -> None:
        """Write a whole object atomically (replacing it)."""
        if self.local:
            target = self._local(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            with open(temp, "wb") as handle:
                handle.write(data)
            os.replace(temp, target)
        else:
            self._fs.pipe_file(self._remote(path), data)

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        """Bytes of an object, or of ``size`` bytes from ``offset``."""
        try:
            if self.local:
                with open(self._local(path), "rb") as handle:
                    handle.seek(offset)
                    return handle.read() if size is None else handle.read(size)
            end = None if size is None else offset + size
            return self._fs.cat_file(self._remote(path), start=offset, end=end)
        except FileNotFoundError:
            raise StoreError(f"array file {self.describe(path)} is missing") from None

    def open_chunk(self, path: str, size: int) -> int:
        """A writable file descriptor of a local chunk file sized to ``size`` bytes."""
        target = self._local(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        return fd

    def list(self, prefix: str) -> list[str]:
        """Paths of the objects under ``prefix``, relative to the root."""
        if self.local:
            base = self._local(prefix)
            return (
                sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())
                if base.is_dir()
                else []
            )
        remote = self._remote(prefix)
        if not self._fs.exists(remote):
            return []
        root = self._base.rstrip("/")
        return sorted(p.removeprefix(root).lstrip("/") for p in self._fs.find(remote))

    def local_path(self, path: str) -> Path:
        """The filesystem path of a local object."""
        return self._local(path)

    def exists(self, path: str) -> bool:
        """Whether an object exists."""
        return self._local(path).exists() if self.local else self._fs.exists(self._remote(path))

    def describe(self, path: str) -> str:
        """Human-readable location of an object, for messages."""
        return str(self._local(path)) if self.local else f"{self.url.rstrip('/')}/{path}"
