"""Many writer processes on one store at once: 32 on each server backend, 8 on SQLite.

Each process records its own run (3,000 ``log`` calls of 2 keys, flushing every 0.1 s,
sealing a chunk every 256 points, pausing briefly now and then so that flushes of different
processes interleave). The processes wait at a barrier after ``ss.init`` so that they write
together. Afterwards every process has exited cleanly, every point is there bit for bit, every
run is finished and ``Store.check()`` is empty. Servers that cannot be reached are skipped
(failed when ``$STEPSTORE_REQUIRE_SERVICES`` is set), as everywhere in ``backend_fixtures``.
"""

from __future__ import annotations

import subprocess
import time

import pytest

import stepstore as ss
from stepstore.testing import bits, python

CALLS = 3_000
#: Seconds a single process may take, counted from the barrier (very generous: 2 cores).
TIMEOUT = 300

_WRITER = """
import sys, time
import stepstore as ss

uri, k, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
run = ss.init("stress", name=f"p{k}", store=uri, params={"k": k}, flush_interval=0.1,
              chunk_size=256)
print("ready", flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit(3)
for i in range(calls):
    run.log({"a": k * 1e6 + i + 0.1, "b": -(k + i) / 7}, epoch=i // 1000)
    if i % 100 == 99:
        time.sleep(0.02)
run.finish()
print("done", flush=True)
"""


def expected_a(k: int) -> list[float]:
    return [k * 1e6 + i + 0.1 for i in range(CALLS)]


def expected_b(k: int) -> list[float]:
    return [-(k + i) / 7 for i in range(CALLS)]


@pytest.mark.parametrize(
    ("store_uri", "processes"),
    [("sqlite", 8), ("postgresql", 32), ("mariadb", 32)],
    indirect=["store_uri"],
)
def test_many_processes_write_one_store(store_uri: str, processes: int) -> None:
    ss.init("stress-setup", store=store_uri).finish()  # the schema exists before the crowd
    procs = [
        python(
            _WRITER,
            store_uri,
            str(k),
            str(CALLS),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k in range(processes)
    ]
    try:
        for k, proc in enumerate(procs):
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                _, errors = proc.communicate(timeout=TIMEOUT)
                pytest.fail(f"process {k} did not start ({proc.returncode}): {errors}")
        started = time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        failures = []
        for k, proc in enumerate(procs):
            left = max(1.0, TIMEOUT - (time.monotonic() - started))
            out, errors = proc.communicate(timeout=left)
            if proc.returncode != 0 or out.strip() != "done" or "Traceback" in errors:
                failures.append(f"process {k} exited with {proc.returncode}: {errors[-2000:]}")
        assert not failures, "\n".join(failures)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    with ss.open(store_uri) as store:
        runs = store.runs(project="stress")
        assert sorted(r.name for r in runs) == sorted(f"p{k}" for k in range(processes))
        assert {r.status for r in runs} == {"finished"}
        for run in runs:
            k = int(run.name[1:])
            frame = run.scalars(["a", "b"])
            for key, expected in (("a", expected_a(k)), ("b", expected_b(k))):
                got = frame[frame["key"] == key]
                assert got["step"].tolist() == list(range(CALLS)), (run.name, key)
                assert got["epoch"].tolist() == [i // 1000 for i in range(CALLS)], (run.name, key)
                assert bits(got["value"]) == bits(expected), (run.name, key)
        assert store.check() == []
        assert not list(store.backend.journal_dir.glob("*.journal"))
