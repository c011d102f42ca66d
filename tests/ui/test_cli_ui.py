"""``stepstore ui``: bad stores and ports, the token, and the real server in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from click.testing import CliRunner, Result

import stepstore as ss
from stepstore.cli import main

STEPSTORE = Path(sys.executable).with_name("stepstore")


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    with ss.init("p", name="only", store=path, flush_interval=0.05) as run:
        run.log({"loss": 0.5}, step=0)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_help_names_the_options() -> None:
    result = cli("ui", "--help")
    assert result.exit_code == 0
    for option in ("--store", "--host", "--port", "--token", "--open", "127.0.0.1", "5757"):
        assert option in result.stdout


@pytest.mark.parametrize("kind", ["missing", "empty", "not sqlite", "a file"])
def test_not_a_store_exits_1_with_the_message(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    if kind == "empty":
        target.mkdir()
    elif kind == "not sqlite":
        target.mkdir()
        (target / "stepstore.db").write_bytes(b"this is not a database" * 100)
    elif kind == "a file":
        target.write_text("hello")
    result = cli("ui", "--store", target, "--port", free_port())
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {target}")
    assert "not a stepstore" in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


def test_port_in_use(small_store: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = cli("ui", "--store", small_store, "--port", port)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 is in use; stop what uses it or choose another "
        "with --port\n"
    )


def test_bad_token_refused(small_store: Path) -> None:
    result = cli("ui", "--store", small_store, "--port", free_port(), "--token", "bad token")
    assert result.exit_code == 1 and "token: expected at least 8 characters" in result.stderr


class Dashboard:
    """``stepstore ui`` in a subprocess; its first line of output is kept."""

    def __init__(self, *args: str | Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [str(STEPSTORE), "ui", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.first_line = self.process.stdout.readline() if self.process.stdout else ""

    def get(self, url: str, token: str | None = None) -> tuple[int, bytes]:
        """Status and body of a GET, waiting up to 20 s for the server to listen."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.monotonic() + 20
        while True:
            try:
                with urlopen(Request(url, headers=headers), timeout=10) as answer:
                    return answer.status, answer.read()
            except HTTPError as exc:
                return exc.code, exc.read()
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.1)

    def stop(self) -> str:
        """Stop the server (once); returns what it printed after its first line."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        rest = ""
        if self.process.stdout and not self.process.stdout.closed:
            rest = self.process.stdout.read()
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()
        return rest


@pytest.fixture
def dashboards() -> Iterator[list[Dashboard]]:
    started: list[Dashboard] = []
    yield started
    for dashboard in started:
        dashboard.stop()


def test_serves_the_api_on_loopback(small_store: Path, dashboards: list[Dashboard]) -> None:
    port = free_port()
    dashboard = Dashboard("--store", small_store, "--port", port)
    dashboards.append(dashboard)
    url = f"http://127.0.0.1:{port}/"
    assert dashboard.first_line == f"stepstore ui: serving {small_store} at {url}\n"
    status, body = dashboard.get(f"{url}api/runs")
    assert status == 200
    (run,) = json.loads(body)["runs"]
    assert run["name"] == "only" and run["summary"]["loss"]["last"] == 0.5
    status, _ = dashboard.get(f"{url}api/runs/nope")
    assert status == 404


def test_other_hosts_get_a_generated_token(small_store: Path, dashboards: list[Dashboard]) -> None:
    port = free_port()
    dashboard = Dashboard("--store", small_store, "--port", port, "--host", "0.0.0.0")
    dashboards.append(dashboard)
    prefix = f"stepstore ui: serving {small_store} at http://0.0.0.0:{port}/?token="
    assert dashboard.first_line.startswith(prefix)
    token = dashboard.first_line[len(prefix) :].strip()
    assert len(token) >= 32
    api = f"http://127.0.0.1:{port}/api/runs"
    status, body = dashboard.get(api)
    assert status == 401 and json.loads(body) == {
        "error": "a valid token is required (Authorization: Bearer TOKEN)"
    }
    assert dashboard.get(f"http://127.0.0.1:{port}/")[0] == 401
    assert dashboard.get(api, token=token)[0] == 200
    assert dashboard.get(f"{api}?token={token}")[0] == 200
    assert token not in dashboard.stop()  # printed once


def test_given_token_is_required_on_loopback_too(
    small_store: Path, dashboards: list[Dashboard]
) -> None:
    port = free_port()
    dashboard = Dashboard("--store", small_store, "--port", port, "--token", "my-own-token")
    dashboards.append(dashboard)
    assert dashboard.first_line.endswith(f":{port}/?token=my-own-token\n")
    api = f"http://127.0.0.1:{port}/api/runs"
    assert dashboard.get(api)[0] == 401
    assert dashboard.get(api, token="my-own-token")[0] == 200
