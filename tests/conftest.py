"""Shared fixtures: a fresh embedded store per test and fast-flushing runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import stepstore as ss

FAST = {"flush_interval": 0.05}


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Location of an embedded store that does not exist yet."""
    return tmp_path / "store"


@pytest.fixture
def new_run(store_path: Path):
    """Factory for runs in ``store_path`` that flush every 50 ms; finishes leftovers."""
    runs: list[ss.Run] = []

    def make(project: str = "test", **kwargs) -> ss.Run:
        kwargs = {**FAST, "store": store_path, **kwargs}
        run = ss.init(project, **kwargs)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.finish()


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout's stepstore importable."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# Fixtures giving each test a fresh store in every backend (SQLite, PostgreSQL, MariaDB).
from .backend_fixtures import (  # noqa: E402
    backend,
    server,
    server_uri,
    store_sql,
    store_uri,
)

__all__ = ["backend", "server", "server_uri", "store_sql", "store_uri"]
