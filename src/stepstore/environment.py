"""What a run records about where it ran: host, process, git commit, Python and packages."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

#: Packages whose versions are recorded when installed (frameworks only if already imported).
_PACKAGES = ("stepstore", "numpy", "pandas", "pyarrow")
_FRAMEWORKS = ("torch", "jax", "tensorflow", "keras", "lightning", "transformers")


def git_commit(cwd: str | None = None) -> str | None:
    """The commit checked out in ``cwd`` (with ``+dirty`` if modified), or ``None``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    """Host, pid, git commit and an ``env`` dict (Python, platform, argv, package versions)."""
    names = list(_PACKAGES) + [f for f in _FRAMEWORKS if f in sys.modules]
    packages = {n: v for n in names if (v := _version(n)) is not None}
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "git_commit": git_commit(),
        "env": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "argv": list(sys.argv),
            "cwd": os.getcwd(),
            "packages": packages,
        },
    }
