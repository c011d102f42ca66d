"""Routes of images (the list, then each PNG as stored) and records (as a table)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, quote_plus

from starlette.datastructures import QueryParams
from starlette.responses import Response

from ..query import Store
from . import params


def form_encode(pairs: list[tuple[str, str]]) -> str:
    """A query string encoded as the browser's ``URLSearchParams`` does (spaces as ``+``;
    only letters, digits and ``*-._`` left as they are)."""
    return "&".join(
        f"{quote_plus(name, safe='*').replace('~', '%7E')}="
        f"{quote_plus(value, safe='*').replace('~', '%7E')}"
        for name, value in pairs
    )


def run_path(run: str) -> str:
    """``/api/runs/{id}`` with the id encoded as ``encodeURIComponent`` does."""
    return "/api/runs/" + quote(run, safe="-_.!~*'()")


def image_url(run: str, key: str, step: int, position: int) -> str:
    """Where one image's PNG is served (``position`` only when it is not the step's first)."""
    pairs = [("key", key), ("step", str(step))]
    if position:
        pairs.append(("position", str(position)))
    return f"{run_path(run)}/image.png?{form_encode(pairs)}"


def images(store: Store, query: QueryParams, run: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/images?key=K``: the images of a key in step order, each with
    its caption and the URL of its PNG."""
    key = params.key(query)
    view = store.run(run)
    return {
        "images": [
            {
                "step": entry.step,
                "caption": entry.caption,
                "url": image_url(view.id, key, entry.step, entry.position),
            }
            for entry in view.image_index(key)
        ]
    }


def image_png(store: Store, query: QueryParams, run: str) -> Response:
    """``GET /api/runs/{id}/image.png?key=K&step=S[&position=P]``: the PNG as stored."""
    key = params.key(query)
    step = params.required_integer(query, "step", *params.INT64)
    position = params.integer(query, "position", 0, 0, 2**31 - 1)
    data = store.run(run).image_png(key, step, position)
    return Response(data, media_type="image/png")


def records(store: Store, query: QueryParams, run: str) -> dict[str, Any]:
    """``GET /api/runs/{id}/records?key=K``: ``columns`` (``step`` then the fields) and
    ``rows``, one per record in step order; a field a record lacks is null."""
    key = params.key(query)
    frame = store.run(run).records(key)
    cells = frame.astype(object).where(frame.notna(), None)
    return {"columns": [str(c) for c in frame.columns], "rows": cells.to_numpy().tolist()}
