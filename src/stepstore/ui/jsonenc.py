"""JSON as the API writes it: NaN is ``null``, infinities are ``"inf"`` and ``"-inf"``.

Most answers hold no non-finite number, so they are encoded by the C encoder at once; only an
answer it refuses is walked to replace those numbers first.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from starlette.responses import Response


def column(values: np.ndarray) -> list[Any]:
    """A NumPy array as a (nested) JSON-ready list, its non-finite floats replaced."""
    array = np.asarray(values)
    plain: list[Any] = array.tolist()
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return plain
    return _finite(plain)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (and NumPy value) made JSON-ready."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return _finite(value.tolist())
    return value


def _plain(value: Any) -> Any:
    """What the encoder writes for a value it does not know (NumPy scalars and arrays)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, non-finite floats written as the API says."""
    options: dict[str, Any] = {
        "ensure_ascii": False,
        "allow_nan": False,
        "separators": (",", ":"),
        "default": _plain,
    }
    try:
        text = json.dumps(value, **options)
    except ValueError:  # a non-finite float somewhere
        text = json.dumps(_finite(value), **options)
    return text.encode("utf-8")


class JSONResponse(Response):
    """A response whose body is :func:`dumps` of the content."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Encode ``content``."""
        return dumps(content)


def error(status: int, message: str) -> JSONResponse:
    """``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status)
