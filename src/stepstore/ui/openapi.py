"""The OpenAPI 3 document of the JSON API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

from .. import __version__
from .scalars import MAX_POINTS, X_COLUMNS
from .tensors import MAX_BINS, MAX_STEPS

_NUMBER_OR_TEXT = {
    "oneOf": [
        {"type": "number"},
        {"type": "string", "enum": ["inf", "-inf"]},
        {"type": "null"},
    ],
    "description": 'A float: NaN is null, infinities are "inf" and "-inf".',
}


def _query(name: str, description: str, schema: dict[str, Any], required: bool = False) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


_RUN = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "Run id, or a run name that only one run has.",
    "schema": {"type": "string"},
}
_KEY = _query("key", "The key (it may contain '/').", {"type": "string"}, required=True)
_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "404": {"$ref": "#/components/responses/NotFound"},
}
_SCALAR_QUERY = [
    _query(
        "key",
        "A scalar key; repeat for several.",
        {"type": "array", "items": {"type": "string"}},
        required=True,
    ),
    _query(
        "x",
        "The column start and stop bound.",
        {"type": "string", "enum": list(X_COLUMNS), "default": "step"},
    ),
    _query(
        "start",
        "Lowest x, inclusive (for time: Unix seconds, rounded to the µs).",
        {"type": "number"},
    ),
    _query("stop", "Highest x, inclusive.", {"type": "number"}),
    _query(
        "max_points",
        "Min/max downsampling within the range: each bucket's extremes and first NaN are "
        "kept, so no spike is lost.",
        {"type": "integer", "minimum": 2, "maximum": MAX_POINTS},
    ),
]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(summary: str, parameters: list[dict], ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {"summary": summary, "parameters": parameters, "responses": {"200": ok, **_ERRORS}}
    }


def _columns(**names: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": dict(names.items())}


_ARRAY_OF_INT = {"type": "array", "items": {"type": "integer"}}
_ARRAY_OF_FLOAT = {"type": "array", "items": _NUMBER_OR_TEXT}
_SERIES = _columns(
    key={"type": "string"},
    step=_ARRAY_OF_INT,
    epoch={"type": "array", "items": {"type": ["integer", "null"]}},
    time={"type": "array", "items": {"type": "number"}, "description": "Unix seconds"},
    value=_ARRAY_OF_FLOAT,
)
_DOWNLOAD = "The points as a file (attachment) with columns key, step, epoch, time, value."

PATHS: dict[str, Any] = {
    "/api/runs": _get(
        "Runs matching a filter, oldest first.",
        [
            _query(
                "where",
                "Filter expression, e.g. \"params.lr < 0.01 and 'baseline' in tags\".",
                {"type": "string"},
            ),
            _query("project", "Only the runs of this project.", {"type": "string"}),
        ],
        _json(
            _columns(runs={"type": "array", "items": {"$ref": "#/components/schemas/Run"}}),
            "The runs.",
        ),
    ),
    "/api/runs/{id}": _get(
        "One run with its keys by kind, where it ran and its events.",
        [_RUN],
        _json({"$ref": "#/components/schemas/RunDetail"}, "The run."),
    ),
    "/api/runs/{id}/scalars": _get(
        "Scalar series as columns, downsampled over an x range.",
        [_RUN, *_SCALAR_QUERY],
        _json(_columns(series={"type": "array", "items": _SERIES}), "One series per key."),
    ),
    "/api/runs/{id}/scalars.csv": _get(
        "Scalar points as CSV (time ISO 8601 UTC; values exact, nan/inf/-inf).",
        [_RUN, *_SCALAR_QUERY],
        {"description": _DOWNLOAD, "content": {"text/csv": {"schema": {"type": "string"}}}},
    ),
    "/api/runs/{id}/scalars.parquet": _get(
        "Scalar points as Parquet (time: timestamp µs UTC).",
        [_RUN, *_SCALAR_QUERY],
        {
            "description": _DOWNLOAD,
            "content": {
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}
            },
        },
    ),
    "/api/runs/{id}/images": _get(
        "The images of a key in step order.",
        [_RUN, _KEY],
        _json(
            _columns(
                images={
                    "type": "array",
                    "items": _columns(
                        step={"type": "integer"},
                        caption={"type": ["string", "null"]},
                        url={"type": "string", "description": "Where its PNG is served."},
                    ),
                }
            ),
            "The images.",
        ),
    ),
    "/api/runs/{id}/image.png": _get(
        "One image as stored.",
        [
            _RUN,
            _KEY,
            _query("step", "Its step.", {"type": "integer"}, required=True),
            _query(
                "position",
                "Which of the images logged at that step (0: the first).",
                {"type": "integer", "minimum": 0, "default": 0},
            ),
        ],
        {
            "description": "The PNG.",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
    ),
    "/api/runs/{id}/tensors": _get(
        "A tensor series: dtype, shape of one step, recorded steps and per-step statistics.",
        [
            _RUN,
            _KEY,
            _query(
                "max_steps",
                "Statistics at up to this many evenly spaced steps (first and last included).",
                {"type": "integer", "minimum": 2, "maximum": MAX_STEPS, "default": 500},
            ),
        ],
        _json(
            _columns(
                key={"type": "string"},
                dtype={"type": "string"},
                shape={"type": "array", "items": {"type": ["integer", "null"]}},
                steps=_ARRAY_OF_INT,
                stats=_columns(
                    step=_ARRAY_OF_INT,
                    min=_ARRAY_OF_FLOAT,
                    max=_ARRAY_OF_FLOAT,
                    mean=_ARRAY_OF_FLOAT,
                    std=_ARRAY_OF_FLOAT,
                    norm=_ARRAY_OF_FLOAT,
                ),
            ),
            "The series.",
        ),
    ),
    "/api/runs/{id}/tensors/slice": _get(
        "A 2-D slice of the tensor at one step, at most 256x256 (block means beyond).",
        [
            _RUN,
            _KEY,
            _query("step", "A recorded step.", {"type": "integer"}, required=True),
            _query(
                "index",
                "Comma-separated leading indices of a tensor with more than two dimensions "
                "(default all 0).",
                {"type": "string"},
            ),
        ],
        _json(
            _columns(
                step={"type": "integer"},
                shape=_ARRAY_OF_INT,
                values={"type": "array", "items": _ARRAY_OF_FLOAT},
                reduced={"type": "boolean"},
                min={"type": ["number", "null"], "description": "Of the finite values."},
                max={"type": ["number", "null"], "description": "Of the finite values."},
            ),
            "The slice.",
        ),
    ),
    "/api/runs/{id}/tensors/histogram": _get(
        "Histograms of the finite values at evenly spaced steps, over shared edges.",
        [
            _RUN,
            _KEY,
            _query(
                "bins",
                "Bins.",
                {"type": "integer", "minimum": 1, "maximum": MAX_BINS, "default": 64},
            ),
            _query(
                "max_steps",
                "At most this many steps (first and last included).",
                {"type": "integer", "minimum": 2, "maximum": MAX_STEPS, "default": 200},
            ),
        ],
        _json(
            _columns(
                steps=_ARRAY_OF_INT,
                edges={"type": "array", "items": {"type": "number"}},
                counts={"type": "array", "items": _ARRAY_OF_INT},
            ),
            "The histograms.",
        ),
    ),
    "/api/runs/{id}/records": _get(
        "The records of a key as a table, in step order.",
        [_RUN, _KEY],
        _json(
            _columns(
                columns={"type": "array", "items": {"type": "string"}},
                rows={"type": "array", "items": {"type": "array"}},
            ),
            "step, then one column per field; a missing field is null.",
        ),
    ),
    "/api/openapi.json": _get(
        "This document.", [], _json({"type": "object"}, "The OpenAPI document.")
    ),
}

_RUN_FIELDS = {
    "id": {"type": "string"},
    "name": {"type": "string"},
    "project": {"type": "string"},
    "status": {"type": "string"},
    "live": {"type": "boolean", "description": "Running, with its writer alive."},
    "created": {"type": "string", "format": "date-time"},
    "ended": {"type": ["string", "null"], "format": "date-time"},
    "duration": {"type": ["number", "null"], "description": "Seconds; a live run's up to now."},
    "params": {"type": "object"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "summary": {
        "type": "object",
        "additionalProperties": _columns(
            last=_NUMBER_OR_TEXT,
            min=_NUMBER_OR_TEXT,
            max=_NUMBER_OR_TEXT,
            count={"type": "integer"},
        ),
    },
}


_EVENT = {
    **_columns(
        step={"type": "integer"},
        time={"type": "number", "description": "Unix seconds"},
        trigger={"type": "string", "description": "What fired: on_nan('loss'), dump_flight..."},
        key={"type": ["string", "null"], "description": "The key whose value fired it."},
        reason={"type": "string"},
        rank={"type": "integer"},
    ),
    "description": "A flight recorder's trigger firing (or run.dump_flight), by time.",
}


def document() -> dict[str, Any]:
    """The OpenAPI document (a new dict each call)."""
    keys = {"type": "array", "items": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "stepstore ui",
            "version": __version__,
            "description": "Read-only JSON API of the stepstore dashboard. Keys travel as query "
            "parameters. With a token, send Authorization: Bearer TOKEN.",
        },
        "paths": PATHS,
        "components": {
            "schemas": {
                "Run": {"type": "object", "properties": _RUN_FIELDS},
                "RunDetail": {
                    "type": "object",
                    "properties": {
                        **_RUN_FIELDS,
                        "keys": _columns(scalars=keys, tensors=keys, images=keys, records=keys),
                        "meta": _columns(
                            host={"type": "string"},
                            pid={"type": "integer"},
                            git_commit={"type": ["string", "null"]},
                        ),
                        "events": {"type": "array", "items": _EVENT},
                    },
                },
                "Error": _columns(error={"type": "string"}),
            },
            "responses": {
                name: _json({"$ref": "#/components/schemas/Error"}, text)
                for name, text in (
                    ("BadRequest", "A malformed parameter or filter."),
                    ("Unauthorized", "No valid token."),
                    ("NotFound", "No such run, key or step."),
                )
            },
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }
