"""The static report (``stepstore report RUN... -o report.html``): one self-contained HTML
file, the built page with its style, its script (as a ``data:`` URL) and every answer it
needs inlined.

The answers are computed by the API's own route functions, so the report shows exactly what
the dashboard would. They are kept in ``<script id="stepstore-report"
type="application/json">`` as ``{"api": {CANONICAL_URL: ANSWER}, "blobs": {IMAGE_URL:
DATA_URL}}``, where a canonical URL is the path with its query parameters sorted by name and
encoded as ``URLSearchParams`` does (the page looks requests up by the same rule).
"""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path
from typing import Any

from starlette.datastructures import QueryParams

from ..errors import InvalidArgumentError, StepstoreError
from ..query import RunView, Store
from ..query import open as open_store
from . import media, runs, scalars, tensors
from .app import STATIC
from .jsonenc import dumps
from .media import form_encode, run_path

#: Most points per scalar key a report holds (min/max downsampled).
REPORT_POINTS = 5_000
#: The built files the report inlines.
BUNDLE = ("index.html", "app.js", "app.css")

_STYLESHEET = re.compile(r"<link\b[^>]*\bhref=[\"'][^\"']*app\.css[\"'][^>]*>", re.IGNORECASE)
_SCRIPT = re.compile(
    r"<script\b([^>]*)\bsrc=[\"'][^\"']*app\.js[\"']([^>]*)>\s*</script>", re.IGNORECASE
)
_EXTERNAL = re.compile(r"\b(?:src|href)\s*=\s*[\"']?(?!#|data:)([^\"'\s>]+)", re.IGNORECASE)


def canonical(path: str, pairs: list[tuple[str, str]]) -> str:
    """The report's key of a request: ``path`` and its parameters sorted by name."""
    ordered = sorted(pairs, key=lambda pair: pair[0])
    return f"{path}?{form_encode(ordered)}" if ordered else path


class _Collector:
    """Fills the report's ``api`` and ``blobs`` maps by calling the route functions."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.api: dict[str, Any] = {}
        self.blobs: dict[str, str] = {}

    def get(self, handler: Any, view: RunView, route: str, pairs: list[tuple[str, str]]) -> Any:
        """Answer ``route`` of ``view`` with ``pairs`` and keep it under its canonical URL
        (``max_points`` is a setting of the report, not part of the key)."""
        path = f"{run_path(view.id)}{route}"
        answer = handler(self.store, QueryParams(pairs), view.id)
        key_pairs = [(name, value) for name, value in pairs if name != "max_points"]
        self.api[canonical(path, key_pairs)] = answer
        return answer

    def run(self, view: RunView) -> None:
        """Everything the page can show of one run."""
        self.api[run_path(view.id)] = runs.one_run(self.store, QueryParams(), view.id)
        for key in view.keys("scalar"):
            pairs = [("key", key), ("max_points", str(REPORT_POINTS))]
            self.get(scalars.series, view, "/scalars", pairs)
        for key in view.keys("image"):
            listing = self.get(media.images, view, "/images", [("key", key)])
            for image in listing["images"]:
                query = QueryParams(image["url"].partition("?")[2])
                png = media.image_png(self.store, query, view.id).body
                self.blobs[image["url"]] = "data:image/png;base64," + base64.b64encode(png).decode(
                    "ascii"
                )
        for key in view.keys("record"):
            self.get(media.records, view, "/records", [("key", key)])
        for key in view.keys("tensor"):
            summary = self.get(tensors.summary, view, "/tensors", [("key", key)])
            self.get(tensors.histogram, view, "/tensors/histogram", [("key", key)])
            if summary["steps"]:
                last = str(summary["steps"][-1])
                self.get(tensors.slice_, view, "/tensors/slice", [("key", key), ("step", last)])


def _bundle() -> dict[str, str]:
    """The built page's files; a ``StepstoreError`` saying how to build them if missing."""
    missing = [name for name in BUNDLE if not (STATIC / name).is_file()]
    if missing:
        raise StepstoreError(
            f"the dashboard page is not built ({', '.join(missing)} missing in {STATIC}); "
            "run `npm ci && npm run build` in frontend/ first"
        )
    return {name: (STATIC / name).read_text(encoding="utf-8") for name in BUNDLE}


def _inline(files: dict[str, str], data: dict[str, Any]) -> str:
    """``index.html`` with the style, the report data and the script inlined."""
    html = files["index.html"]
    if not _STYLESHEET.search(html) or not _SCRIPT.search(html):
        raise StepstoreError(
            f"{STATIC / 'index.html'} does not link app.css and app.js; rebuild the page"
        )
    external = _EXTERNAL.search(_SCRIPT.sub("", _STYLESHEET.sub("", html)))
    if external:
        raise StepstoreError(
            f"{STATIC / 'index.html'} refers to {external.group(1)!r}, which a report cannot inline"
        )
    # a style element ends only at "</style"; the JSON's "<" are all escaped, so neither
    # "</script" nor "<!--" can occur in it; the script, whose text could hold both in ways
    # no escape fits everywhere (strings, regular expressions), goes in as a data: URL
    style = re.sub(r"</(style)", r"<\\/\1", files["app.css"], flags=re.IGNORECASE)
    payload = dumps(data).decode("utf-8").replace("<", "\\u003c")
    script = "data:text/javascript;base64," + base64.b64encode(
        files["app.js"].encode("utf-8")
    ).decode("ascii")

    def script_tag(match: re.Match[str]) -> str:
        return (
            f'<script id="stepstore-report" type="application/json">{payload}</script>\n'
            f'<script{match.group(1)}src="{script}"{match.group(2)}></script>'
        )

    html = _STYLESHEET.sub(lambda _: f"<style>{style}</style>", html, count=1)
    return _SCRIPT.sub(script_tag, html, count=1)


def write_report(
    store: str | os.PathLike[str] | Store, run_ids: list[str], path: str | os.PathLike[str]
) -> Path:
    """Write the static report of the runs ``run_ids`` (ids or unique names) to ``path``.

    Returns the path written. Raises ``NotFoundError`` for a run that does not exist,
    ``InvalidArgumentError`` without runs, and ``StepstoreError`` when the page is not built.
    """
    if not run_ids:
        raise InvalidArgumentError("run_ids: expected at least one run id or name")
    files = _bundle()
    opened = store if isinstance(store, Store) else open_store(store)
    try:
        views = [opened.run(run) for run in dict.fromkeys(run_ids)]
        collector = _Collector(opened)
        now = time.time()
        collector.api["/api/runs"] = {"runs": [runs.describe(view, now) for view in views]}
        for view in views:
            collector.run(view)
    finally:
        if opened is not store:
            opened.close()
    target = Path(path)
    try:
        target.write_text(_inline(files, {"api": collector.api, "blobs": collector.blobs}), "utf-8")
    except OSError as exc:
        raise InvalidArgumentError(f"path {str(target)!r}: cannot write ({exc.strerror})") from None
    return target
