"""Many writer processes on one store at once: 32 on each server backend, 8 on SQLite.

Each process records its own run, or, as a rank of one distributed job recorded with
``ranks="all"``, its rank's series of the shared run: 3,000 ``log`` calls of 2 keys,
flushing every 0.1 s, sealing a chunk every 256 points, pausing briefly now and then so
that flushes of different processes interleave. The processes wait at a barrier after
``ss.init`` so that they write together. Afterwards every process has exited cleanly, every
point is there bit for bit, every run (or rank) is finished and ``Store.check()`` is empty.
Servers that cannot be reached are skipped (failed when ``$STEPSTORE_REQUIRE_SERVICES`` is
set), as everywhere in ``backend_fixtures``.
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

JOB = "stress-job"

_WRITER = """
import os, sys, time
import stepstore as ss

uri, k, calls, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if world:  # a rank of one job: every rank records into the shared run
    os.environ.update(RANK=str(k), WORLD_SIZE=str(world), STEPSTORE_RUN_ID="stress-job")
run = ss.init("stress", name=f"p{k}", store=uri, params={"k": k}, flush_interval=0.1,
              chunk_size=256, ranks="all")
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


@pytest.mark.slow
@pytest.mark.parametrize("as_ranks", [False, True], ids=["runs", "ranks"])
@pytest.mark.parametrize(
    ("store_uri", "processes"),
    [("sqlite", 8), ("postgresql", 32), ("mariadb", 32)],
    indirect=["store_uri"],
)
def test_many_processes_write_one_store(store_uri: str, processes: int, as_ranks: bool) -> None:
    ss.init("stress-setup", store=store_uri).finish()  # the schema exists before the crowd
    procs = [
        python(
            _WRITER,
            store_uri,
            str(k),
            str(CALLS),
            str(processes if as_ranks else 0),
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
        if as_ranks:
            assert [r.id for r in runs] == [JOB]
            assert runs[0].rank_status == dict.fromkeys(range(processes), "finished")
            parts = [(k, runs[0].scalars(["a", "b"], ranks=k)) for k in range(processes)]
        else:
            assert sorted(r.name for r in runs) == sorted(f"p{k}" for k in range(processes))
            assert {r.status for r in runs} == {"finished"}
            parts = [(int(r.name[1:]), r.scalars(["a", "b"])) for r in runs]
        for k, frame in parts:
            for key, expected in (("a", expected_a(k)), ("b", expected_b(k))):
                got = frame[frame["key"] == key]
                assert got["step"].tolist() == list(range(CALLS)), (k, key)
                assert got["epoch"].tolist() == [i // 1000 for i in range(CALLS)], (k, key)
                assert bits(got["value"]) == bits(expected), (k, key)
        assert store.check() == []
        assert not list(store.backend.journal_dir.glob("*.journal"))
