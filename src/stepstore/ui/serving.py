"""``serve()``: run the dashboard with uvicorn until interrupted."""

from __future__ import annotations

import errno
import os
import secrets
import socket
import webbrowser

from ..errors import InvalidArgumentError
from ..query import Store
from .app import create_app
from .security import is_loopback

#: Host names the Host header may hold when serving on loopback.
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``.

    Raises:
        InvalidArgumentError: The port is in use, not allowed, or the host is unknown.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise InvalidArgumentError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InvalidArgumentError(
                f"port {port} on {host} is in use; stop what uses it or choose another with --port"
            ) from None
        raise InvalidArgumentError(f"cannot listen on {host} port {port}: {exc.strerror}") from None
    return sock


def url_of(host: str, port: int, token: str | None) -> str:
    """The address a browser opens (with ``?token=`` when there is a token)."""
    name = f"[{host}]" if ":" in host else host
    return f"http://{name}:{port}/" + (f"?token={token}" if token else "")


def serve(
    store: str | os.PathLike[str] | Store,
    host: str = "127.0.0.1",
    port: int = 5757,
    token: str | None = None,
    open_browser: bool = False,
) -> None:
    """Serve the dashboard of ``store`` on ``host``:``port`` until interrupted.

    A host other than loopback needs a token: without ``token`` one is generated
    (``secrets.token_urlsafe``). The address to open (with the token) is printed once on
    stdout; on loopback only loopback names are accepted in the Host header.

    Raises:
        InvalidArgumentError: The port is in use or the host cannot be bound.
        StoreError: The store cannot be opened.
    """
    import uvicorn

    loopback = is_loopback(host)
    if token is None and not loopback:
        token = secrets.token_urlsafe(24)
    sock = bind(host, port)
    try:
        app = create_app(store, token=token, allowed_hosts=LOOPBACK_NAMES if loopback else ["*"])
        url = url_of(host, sock.getsockname()[1], token)
        print(f"stepstore ui: serving {app.state.store.uri} at {url}", flush=True)
        if open_browser:
            webbrowser.open(url)
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
