"""The guard in front of every route: the Host header (against DNS rebinding) and the token.

With a token, a request passes with ``Authorization: Bearer TOKEN``, with ``?token=TOKEN``
(the answer then sets an HttpOnly, SameSite=Strict cookie, so the page's own requests pass
without knowing the token) or with that cookie. Tokens are compared in constant time. A
refusal is JSON (``{"error": ...}``) under ``/api`` and plain text elsewhere. Every answer
carries headers that keep the page out of frames and the token out of ``Referer``.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl

from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .jsonenc import error

#: Name of the cookie that carries the token after a ``?token=`` visit.
COOKIE = "stepstore_token"
#: Headers added to every answer.
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 possibly in brackets) is this machine's
    loopback: ``localhost`` or an address in 127.0.0.0/8 or ``::1``."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a ``Host`` header, without its port (IPv6 keeps no brackets)."""
    if header.startswith("["):
        return header[1 : header.find("]")].lower() if "]" in header else header.lower()
    return header.rsplit(":", 1)[0].lower() if header.count(":") == 1 else header.lower()


class Guard:
    """ASGI middleware checking the Host header and the token of every HTTP request.

    Args:
        app: The application behind the guard.
        token: The token every request must show; None lets every request through.
        allowed_hosts: Host names (without port) the ``Host`` header may name; ``"*"``
            allows any. None: any host when there is a token, else only loopback names.
    """

    def __init__(
        self, app: ASGIApp, token: str | None, allowed_hosts: Iterable[str] | None = None
    ) -> None:
        self.app = app
        self.token = token
        self.hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a refused request at once; pass the others on with the extra headers."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._host_problem(headers.get("host", ""))
        status = 400
        from_query = False
        if refusal is None and self.token is not None:
            shown, from_query = self._shown_token(scope, headers)
            if shown is None or not hmac.compare_digest(shown.encode(), self.token.encode()):
                refusal, status = "a valid token is required (Authorization: Bearer TOKEN)", 401
        if refusal is not None:
            await self._refuse(scope, status, refusal)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    extra.setdefault(name, value)
                if from_query:
                    extra.append(
                        "set-cookie",
                        f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/",
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _host_problem(self, header: str) -> str | None:
        """Why the ``Host`` header is refused, or None."""
        name = host_name(header)
        if self.hosts is None:
            if self.token is not None or is_loopback(name):
                return None
            return (
                f"Host header {header!r} is not a loopback name; the dashboard answers "
                "http://127.0.0.1 or http://localhost (start it with --host and --token to "
                "serve other names)"
            )
        if "*" in self.hosts or name in self.hosts:
            return None
        return f"Host header {header!r} is not one of {', '.join(sorted(self.hosts))}"

    @staticmethod
    def _shown_token(scope: Scope, headers: dict[str, str]) -> tuple[str | None, bool]:
        """The token the request shows (header, then query, then cookie) and whether it came
        from the query string."""
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return credentials.strip(), False
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if "token" in query:
            return query["token"], True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except CookieError:  # a malformed header shows no token
            return None, False
        morsel = cookie.get(COOKIE)
        return (morsel.value if morsel is not None else None), False

    @staticmethod
    def _refuse(scope: Scope, status: int, message: str) -> Response:
        """The refusal: JSON under ``/api``, plain text elsewhere."""
        response: Response
        if scope["path"].startswith("/api"):
            response = error(status, message)
        else:
            response = PlainTextResponse(message, status_code=status)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        for name, value in HEADERS.items():
            response.headers[name] = value
        return response
