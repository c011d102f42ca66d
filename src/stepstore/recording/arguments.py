"""Checks of the recording API's arguments: key and artifact names, artifact files,
counts, wall times; each error names the argument, the value and what was expected."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, NoReturn

from ..errors import InvalidArgumentError, InvalidValueError, StepOrderError
from ..values import require_unicode
from .messages import ArtifactJob

#: The largest step or epoch (signed 64-bit).
MAX_STEP = 2**63 - 1
#: Wall times stop here (stored as int64 microseconds; about the year 33658).
MAX_TIME = 1e12
MAX_KEY = 1024
MAX_ARTIFACT_NAME = 255


def check_name(what: str, name: Any, maximum: int, error: type[Exception]) -> str:
    """``name`` if it is a non-empty, trimmed, printable UTF-8 string of at most
    ``maximum`` characters; else ``error`` naming ``what``."""
    if not isinstance(name, str):
        raise error(f"{what} {name!r}: expected a string, got {type(name).__name__}")
    if not name or name != name.strip():
        raise error(
            f"{what} {name!r}: expected a non-empty name without leading or trailing whitespace"
        )
    if len(name) > maximum:
        raise error(f"{what} {name[:40]!r}...: longer than {maximum} characters")
    bad = [c for c in name if ord(c) < 32 or ord(c) == 127]
    if bad:
        raise error(f"{what} {name!r}: contains control character {bad[0]!r}")
    require_unicode(name, f"{what} {name!r}", "a name that encodes as UTF-8")
    return name


def check_key(key: Any) -> str:
    """``key`` if it can name a series; else ``InvalidValueError``."""
    return check_name("key", key, MAX_KEY, InvalidValueError)


def check_artifact_name(name: Any) -> str:
    """``name`` if it can name an artifact file; else ``InvalidArgumentError``."""
    check_name("artifact name", name, MAX_ARTIFACT_NAME, InvalidArgumentError)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise InvalidArgumentError(
            f"artifact name {name!r}: expected a file name, without '/' or '\\' and not '.' or '..'"
        )
    return name


def open_artifact(path: str | os.PathLike[str], name: str | None) -> ArtifactJob:
    """The job that stores the file at ``path`` as artifact ``name`` (its file name when
    None), the file opened for it; else ``InvalidArgumentError``."""
    source = Path(os.fspath(path))
    if not source.is_file():
        raise InvalidArgumentError(f"path={str(source)!r}: not a file")
    name = check_artifact_name(source.name if name is None else name)
    try:
        handle = open(source, "rb")  # noqa: SIM115 - the writer closes it once copied
    except OSError as exc:
        raise InvalidArgumentError(f"path={str(source)!r}: cannot read it ({exc})") from None
    return ArtifactJob(name, handle, os.fstat(handle.fileno()).st_size)


def check_count(name: str, value: Any, maximum: int = MAX_STEP) -> int:
    """``value`` as an int in ``[0, maximum]``; else ``InvalidArgumentError`` naming ``name``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InvalidArgumentError(
            f"{name}={value!r}: expected a non-negative integer, got {type(value).__name__}"
        )
    number = value.__index__()
    if not 0 <= number <= maximum:
        raise InvalidArgumentError(f"{name}={number}: expected an integer in [0, {maximum}]")
    return number


def wall_time(given: Any) -> float:
    """``given`` (Unix seconds) checked, or the current time when it is None."""
    if given is None:
        return time.time()
    if (
        isinstance(given, bool)
        or not isinstance(given, (int, float))
        or not (0 <= given < MAX_TIME)
    ):
        raise InvalidArgumentError(
            f"time={given!r}: expected Unix seconds, a finite number in [0, {MAX_TIME:.0f})"
        )
    return float(given)


def step_order_error(key: str, step: int, last: int) -> NoReturn:
    """Raise ``StepOrderError``: ``key`` was given ``step`` at or below ``last``."""
    relation = "at" if step == last else "below"
    raise StepOrderError(
        f"key {key!r}: step {step} is {relation} its last recorded step {last}; a key takes "
        "one value per step and its steps only go forward (init(..., allow_rewind=True) "
        "allows it)"
    )
