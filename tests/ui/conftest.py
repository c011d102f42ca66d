"""Fixtures for the browser tests: the real dashboard app served by uvicorn in a thread, and a
headless Debian Chromium driven by Playwright, with a screenshot saved on failure."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Keeps each phase's report on the test item, so fixtures can tell a failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session; skips only when it is missing and CI did not
    ask for every service (``STEPSTORE_REQUIRE_SERVICES``)."""
    if not CHROMIUM.exists():
        if os.environ.get("STEPSTORE_REQUIRE_SERVICES"):
            pytest.fail(f"{CHROMIUM} is missing and STEPSTORE_REQUIRE_SERVICES is set")
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium to run browser tests)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A fresh page (1280x900); on a failed test its screenshot is ``tmp_path/failure.png``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        shot = tmp_path / "failure.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failed page: {shot}; page errors: {errors}")
    context.close()


class Server:
    """The dashboard app on a free loopback port, in a background thread."""

    def __init__(self, store: str | os.PathLike[str]) -> None:
        import uvicorn

        from stepstore.ui import create_app

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(str(store)), log_level="warning", ws="none", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[str | os.PathLike[str]], str]]:
    """Factory: ``serve(store_path)`` starts the app on that store and returns its URL."""
    servers: list[Server] = []

    def start(store: str | os.PathLike[str]) -> str:
        server = Server(store)
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()
