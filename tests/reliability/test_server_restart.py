"""A PostgreSQL server restarted mid-run loses nothing the run had logged.

Needs a local PostgreSQL cluster this test may restart (``pg_ctlcluster``, run as root);
skipped otherwise. The server is always left running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import stepstore as ss

from ..backend_fixtures import SERVERS, Server

#: Logs ``loss`` (with writer errors as warnings, so log() keeps going while the server is
#: down) until the file ``argv[2]`` exists, printing progress; then finishes the run.
WRITER = """
import os, sys, time, warnings
import stepstore as ss

caught = warnings.catch_warnings(record=True)
failures = caught.__enter__()
warnings.simplefilter("always", RuntimeWarning)
run = ss.init("restart", store=sys.argv[1], flush_interval=0.1, on_error="warn")
print(run.id, flush=True)
i = 0
while not os.path.exists(sys.argv[2]):
    run.log({"loss": float(i)}, step=i)
    i += 1
    if i % 100 == 0:
        print(i, flush=True)
        time.sleep(0.01)
run.finish()
print("writer failures", len(failures), "total", i, flush=True)
"""


def _cluster() -> list[str]:
    """The ``pg_ctlcluster`` command that restarts the local cluster; skips when there is none."""
    server = SERVERS["postgresql"]
    server.require()
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        pytest.skip("no pg_ctlcluster: cannot restart the PostgreSQL server here")
    if os.geteuid() != 0:
        pytest.skip("restarting the PostgreSQL server needs root")
    if urlsplit(server.admin_uri).hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the PostgreSQL test server is not local")
    versions = sorted(os.listdir("/etc/postgresql"))
    if len(versions) != 1 or not Path("/etc/postgresql", versions[0], "main").is_dir():
        pytest.skip(f"expected one local cluster 'main', found versions {versions}")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main"]


def _wait_until_up(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.execute("SELECT 1")
            return
        except Exception:  # any failure means: not back yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _leave_running(server: Server, command: list[str]) -> None:
    """Start the cluster again if it is not answering (a failed restart)."""
    try:
        server.execute("SELECT 1")
    except Exception:  # noqa: BLE001 - not answering: start it
        subprocess.run([*command, "start"], capture_output=True, timeout=120)
        _wait_until_up(server)


def _wait_for_progress(lines: list[str], proc: subprocess.Popen[str], at_least: int) -> int:
    """Read the writer's progress lines until it reports ``at_least`` points."""
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, f"the writer stopped early: {proc.stderr.read() if proc.stderr else ''}"
        lines.append(line)
        if line.strip().isdigit() and int(line) >= at_least:
            return int(line)


def test_server_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    command = _cluster()
    server = SERVERS["postgresql"]
    stop = tmp_path / "stop"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2] / "src"),
        "STEPSTORE_JOURNAL_DIR": str(tmp_path / "journals"),
        "STEPSTORE_ARRAY_STORE": str(tmp_path / "arrays"),
    }
    with server.database() as uri:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            run_id = proc.stdout.readline().strip()
            before = _wait_for_progress(lines, proc, 2000)
            try:
                restarted = subprocess.run(
                    [*command, "restart"], capture_output=True, text=True, timeout=120
                )
                assert restarted.returncode == 0, restarted.stderr
            finally:
                _wait_until_up(server)
            _wait_for_progress(lines, proc, before + 3000)
            stop.touch()
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            total = int(out.split()[-1])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
            _leave_running(server, command)
        with ss.open(uri) as opened:
            view = opened.run(run_id)
            assert view.status == "finished"
            values = view.scalars("loss")["value"].tolist()
            assert values == [float(i) for i in range(total)]
            assert opened.check() == []
