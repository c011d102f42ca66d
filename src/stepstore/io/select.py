"""Choosing what a multi-run export covers: which runs hold which keys, and the directory
it writes into."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from ..errors import InvalidArgumentError, NotFoundError
from ..query.views import RunView


def plan_keys(
    views: list[RunView], kind: str, patterns: list[str] | None, ranks: str | None
) -> list[tuple[RunView, list[str] | None]]:
    """The runs holding keys of ``kind`` that ``patterns`` match, each with the patterns
    that match in it (None: all its keys)."""
    plan: list[tuple[RunView, list[str] | None]] = []
    matched: set[str] = set()
    for view in views:
        names = {k for r in (view.ranks if ranks else [0]) for k in view.keys(kind, r)}
        if patterns is None:
            if names:
                plan.append((view, None))
            continue
        present = [p for p in patterns if any(fnmatch.fnmatchcase(n, p) for n in names)]
        matched.update(present)
        if present:
            plan.append((view, present))
    where = ", ".join(f"{v.name} ({v.id})" for v in views)
    missing = [p for p in patterns or [] if p not in matched]
    if missing:
        raise NotFoundError(f"no {kind} key matching {missing[0]!r} in run(s) {where}")
    if not plan:
        raise NotFoundError(f"no {kind} keys in run(s) {where}")
    return plan


def check_directory(directory: object) -> Path:
    """``directory`` as a directory to write into, created if missing."""
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise InvalidArgumentError(f"directory={directory!r}: expected a directory path")
    root = Path(os.fspath(directory)).expanduser()
    if root.exists() and not root.is_dir():
        raise InvalidArgumentError(f"{str(root)!r} is a file; expected a directory")
    if not root.parent.is_dir():
        raise InvalidArgumentError(f"directory {str(root)!r}: {str(root.parent)!r} does not exist")
    root.mkdir(exist_ok=True)
    return root


def matching(names: list[str], patterns: list[str] | None) -> list[str]:
    """The ``names`` that one of ``patterns`` (names or globs) matches; all when None."""
    if patterns is None:
        return names
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
