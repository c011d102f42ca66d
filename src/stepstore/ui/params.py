"""Query parameters of the API, checked: a bad one is an ``InvalidArgumentError`` (a 400)
whose message names the parameter, the value and what was expected."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from starlette.datastructures import QueryParams

from ..errors import InvalidArgumentError

#: Range of the int64 columns (steps, epochs) that bounds are clamped to.
INT64 = (-(2**63), 2**63 - 1)


def text(query: QueryParams, name: str, *, required: bool = False) -> str | None:
    """The one value of ``name``, or None when it is absent (an error if ``required``)."""
    values = query.getlist(name)
    if len(values) > 1:
        raise InvalidArgumentError(f"{name}: given {len(values)} times, expected once")
    if not values:
        if required:
            raise InvalidArgumentError(f"{name}: missing; expected {name}=...")
        return None
    return values[0]


def key(query: QueryParams) -> str:
    """The one ``key`` parameter, which must be given and not empty."""
    value = text(query, "key", required=True)
    if not value:
        raise InvalidArgumentError("key: empty; expected a key name")
    return value


def keys(query: QueryParams) -> list[str]:
    """The ``key`` parameters (one or more, each non-empty), without repeats, in order."""
    given = query.getlist("key")
    if not given:
        raise InvalidArgumentError("key: missing; expected one or more key=K parameters")
    if any(not k for k in given):
        raise InvalidArgumentError("key: empty; expected a key name")
    return list(dict.fromkeys(given))


def optional_integer(
    query: QueryParams, name: str, low: int, high: int, *, required: bool = False
) -> int | None:
    """An integer in ``[low, high]``, or None when absent (an error if ``required``)."""
    raw = text(query, name, required=required)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise InvalidArgumentError(f"{name}={raw!r}: expected an integer from {low} to {high}")
    return value


def integer(query: QueryParams, name: str, default: int, low: int, high: int) -> int:
    """An integer in ``[low, high]``, or ``default`` when absent."""
    value = optional_integer(query, name, low, high)
    return default if value is None else value


def required_integer(query: QueryParams, name: str, low: int, high: int) -> int:
    """An integer in ``[low, high]`` that must be given."""
    value = optional_integer(query, name, low, high, required=True)
    assert value is not None  # required: absent is an error
    return value


def number(query: QueryParams, name: str) -> Decimal | None:
    """A finite decimal number (kept exact), or None when absent."""
    raw = text(query, name)
    if raw is None:
        return None
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise InvalidArgumentError(f"{name}={raw!r}: expected a finite number")
    return value


def choice(query: QueryParams, name: str, choices: Sequence[str]) -> str:
    """One of ``choices``; the first when absent."""
    raw = text(query, name)
    if raw is None:
        return choices[0]
    if raw not in choices:
        raise InvalidArgumentError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return raw


def indices(query: QueryParams, name: str) -> tuple[int, ...]:
    """Comma-separated integers >= 0 (``index=2,0``); empty when absent."""
    raw = text(query, name)
    if raw is None or raw == "":
        return ()
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        values = (-1,)
    if any(v < 0 for v in values):
        raise InvalidArgumentError(f"{name}={raw!r}: expected comma-separated integers >= 0")
    return values


def window(query: QueryParams) -> tuple[Decimal | None, Decimal | None]:
    """``start`` and ``stop`` (inclusive bounds of the x column), checked to be in order."""
    start, stop = number(query, "start"), number(query, "stop")
    if start is not None and stop is not None and start > stop:
        raise InvalidArgumentError(f"start={start} is above stop={stop}; expected start <= stop")
    return start, stop


def integer_bounds(start: Decimal | None, stop: Decimal | None) -> tuple[int, int] | None:
    """The integers (steps, epochs) within ``[start, stop]`` as an inclusive pair clamped to
    int64; None when there is none."""
    low = INT64[0] if start is None else max(INT64[0], math.ceil(start))
    high = INT64[1] if stop is None else min(INT64[1], math.floor(stop))
    return (low, high) if low <= high else None
