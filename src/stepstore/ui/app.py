"""The dashboard's ASGI app: the JSON API under ``/api``, the page at ``/`` and its built
files under ``/static/``, behind the Host and token guard (see ``security``).

Routes are plain functions, so Starlette runs them in its thread pool: a slow read never
blocks the event loop. The store is shared by those threads (every backend serialises its
own connection under a lock). Errors become ``{"error": message}``: 400 for a bad parameter
or filter, 404 for a missing run, key or step, 500 for a damaged store; never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import (
    FilterSyntaxError,
    InvalidArgumentError,
    InvalidValueError,
    KindMismatchError,
    NotFoundError,
    StepstoreError,
)
from ..query import Store
from ..query import open as open_store
from . import media, runs, scalars, tensors
from .jsonenc import JSONResponse, error
from .openapi import document
from .security import Guard

#: Where the page's built files are (package data).
STATIC = Path(__file__).resolve().parent / "static"
#: Characters a token may hold (it travels in a header, a query string and a cookie).
TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{8,}")

Handler = Callable[..., Any]

#: Every API route: path and the function answering it (store, query[, run id]).
API: list[tuple[str, Handler]] = [
    ("/api/runs", runs.list_runs),
    ("/api/runs/{id}", runs.one_run),
    ("/api/runs/{id}/scalars", scalars.series),
    ("/api/runs/{id}/scalars.csv", scalars.csv_file),
    ("/api/runs/{id}/scalars.parquet", scalars.parquet_file),
    ("/api/runs/{id}/images", media.images),
    ("/api/runs/{id}/image.png", media.image_png),
    ("/api/runs/{id}/records", media.records),
    ("/api/runs/{id}/tensors", tensors.summary),
    ("/api/runs/{id}/tensors/slice", tensors.slice_),
    ("/api/runs/{id}/tensors/histogram", tensors.histogram),
    ("/api/openapi.json", lambda store, query: document()),
]

#: HTTP status of each kind of error a handler raises (the first match counts).
STATUS: list[tuple[type[Exception], int]] = [
    (NotFoundError, 404),
    (KindMismatchError, 404),  # a key of another kind: no key of the kind asked for
    (FilterSyntaxError, 400),
    (InvalidArgumentError, 400),
    (InvalidValueError, 400),
    (StepstoreError, 500),
]


def answer(handler: Handler, store: Store, query: QueryParams, run: str | None) -> Any:
    """What ``handler`` answers: a JSON-ready value or a Response."""
    return handler(store, query) if run is None else handler(store, query, run)


def _endpoint(handler: Handler) -> Callable[[Request], Response]:
    def endpoint(request: Request) -> Response:
        result = answer(
            handler, request.app.state.store, request.query_params, request.path_params.get("id")
        )
        return result if isinstance(result, Response) else JSONResponse(result)

    endpoint.__doc__ = handler.__doc__
    return endpoint


def _page(request: Request) -> Response:
    """``GET /``: the page."""
    return _static_file("index.html")


def _static(request: Request) -> Response:
    """``GET /static/NAME``: a built file, by its exact name only."""
    return _static_file(request.path_params["name"])


def _static_file(name: str) -> Response:
    """A file of :data:`STATIC` named exactly ``name`` (no path: a name that is not one of
    the directory's files is 404, so nothing outside it can be reached)."""
    try:
        files = {entry.name for entry in os.scandir(STATIC) if entry.is_file()}
    except OSError:
        files = set()
    if name not in files:
        if name == "index.html":
            return PlainTextResponse(
                "the page is not built: run `npm ci && npm run build` in frontend/",
                status_code=404,
            )
        return PlainTextResponse(f"no file {name!r}", status_code=404)
    return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})


def _failure(request: Request, exc: Exception) -> Response:
    """An error as the API reports it (plain text outside ``/api``)."""
    if isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
        if status == 404:
            message = f"no route {request.url.path}"
        elif status == 405:
            message = f"{request.method} {request.url.path}: the API is read-only (GET only)"
    else:
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
        message = str(exc) if isinstance(exc, StepstoreError) else f"internal error: {exc!r}"
    if request.url.path.startswith("/api"):
        return error(status, message)
    return PlainTextResponse(message, status_code=status)


def create_app(
    store: str | os.PathLike[str] | Store,
    *,
    token: str | None = None,
    allowed_hosts: list[str] | None = None,
) -> Starlette:
    """The dashboard app over ``store`` (an open Store, or a path or URI it opens now and
    closes on shutdown).

    Args:
        store: What to serve.
        token: When given, every request needs it (see ``security``).
        allowed_hosts: Names the ``Host`` header may hold (``"*"``: any). None: loopback
            names only, or any name when there is a token.

    Raises:
        InvalidArgumentError: The token is too short or holds characters a cookie cannot.
        StoreError: ``store`` cannot be opened (``NotAStoreError`` when it is no store).
    """
    if token is not None and not TOKEN.fullmatch(token):
        raise InvalidArgumentError(
            "token: expected at least 8 characters of letters, digits and ._~+/=-"
        )
    opened = store if isinstance(store, Store) else open_store(store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if opened is not store:
                opened.close()

    routes = [Route(path, _endpoint(handler), methods=["GET"]) for path, handler in API]
    routes += [
        Route("/", _page, methods=["GET"]),
        Route("/static/{name}", _static, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token, allowed_hosts=allowed_hosts)],
        # StepstoreError and HTTPException answer in the app; any other exception answers
        # 500 and is re-raised for the server's log
        exception_handlers={StepstoreError: _failure, HTTPException: _failure, Exception: _failure},
        lifespan=lifespan,
    )
    app.state.store = opened
    return app
