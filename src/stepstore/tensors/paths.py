"""Where a run's arrays, images and artifacts live under the array root.

Keys, run ids and artifact names become single path components through :func:`path_name`,
an injective encoding: no two names share a component, none is ``.``, ``..``, empty or
absolute, none holds ``/`` or NUL, and two components never differ only by letter case (so
a case-insensitive filesystem keeps them apart too). Plain lower-case names such as
``loss``, ``val_acc`` or ``fc1.weight`` map to themselves.
"""

from __future__ import annotations

import hashlib
import string

#: Characters kept as they are; every other one is written as ``%XX`` per UTF-8 byte
#: (upper-case hex, so escapes never clash with kept letters under case folding).
_KEPT = frozenset(string.ascii_lowercase + string.digits + "_-.~")
#: Longest component written in full; longer ones are cut and end in ``+`` and a hash
#: (``+`` is always escaped, so only such names contain it). Filesystems allow 255 bytes.
_MAX_NAME = 200
_HASH_CHARS = 32


def path_name(text: str) -> str:
    """A path component that stands for ``text`` alone; see the module docstring."""
    parts = []
    for char in text:
        if char in _KEPT:
            parts.append(char)
        else:
            parts.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    name = "".join(parts)
    if name.startswith("."):  # never '.', '..' nor a hidden file
        name = "%2E" + name[1:]
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        cut = _MAX_NAME - _HASH_CHARS - 1
        while name[cut - 2 : cut].count("%"):  # do not split an escape
            cut -= 1
        name = f"{name[:cut]}+{digest[:_HASH_CHARS]}"
    return name


def run_root(run_id: str, rank: int = 0) -> str:
    """Directory of a rank's arrays: ``RUN_ID`` for rank 0, ``RUN_ID/@rankN`` for rank N
    (an encoded key never holds ``@``)."""
    root = path_name(run_id)
    return root if rank == 0 else f"{root}/@rank{rank}"


def series_path(run_id: str, key: str, rank: int = 0) -> str:
    """Path of a tensor or image series' folder (a Zarr group for tensors)."""
    return f"{run_root(run_id, rank)}/{path_name(key)}"


def artifact_path(run_id: str, name: str, rank: int = 0) -> str:
    """Path of an artifact's file."""
    return f"{run_root(run_id, rank)}/artifacts/{path_name(name)}"
