"""Memory stays bounded however long the run: 10M logged points raise RSS by < 100 MB."""

from __future__ import annotations

import pytest

from .conftest import run_python


@pytest.mark.slow
def test_ten_million_points_keep_memory_flat(tmp_path):
    result = run_python(
        """
        import os, sys, stepstore as ss

        def rss_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

        run = ss.init("mem", store=sys.argv[1])
        log = run.log
        for i in range(10_000):   # warm up: keys, tails, caches
            log({"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 0.1})
        base = rss_mb()
        for i in range(10_000, 3_343_334):
            log({"loss": 1.0 / (i + 1), "acc": 0.5, "lr": 0.1})
        grown = rss_mb() - base
        run.finish()
        view = ss.open(sys.argv[1]).run(run.id)
        print(grown, view.summary["loss"]["count"] * 3)
        """,
        str(tmp_path / "store"),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    grown, points = result.stdout.split()
    assert int(points) == 10_030_002
    assert float(grown) < 100, f"RSS grew by {grown} MB over 10M points"
