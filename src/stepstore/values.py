"""What a logged value is: a host number, a device scalar to resolve later, or an error.

Converters are chosen once per Python type and cached, so the common types cost one dict
lookup. Framework types are recognised by their module name; no framework is imported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, InvalidValueError, KindMismatchError

#: Returned by a converter for a 0-d tensor on an accelerator: resolved by the writer.
DEFER = object()

_MAX_EXACT_INT = 2**53

Converter = Callable[[str, Any], Any]


def _expected(key: str, value: Any, why: str = "") -> InvalidValueError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    reason = f" ({why})" if why else ""
    return InvalidValueError(
        f"key {key!r}: cannot record {shown} of type {type(value).__name__}{reason}; expected "
        "a number (int, float, bool, NumPy scalar) or a 0-d NumPy/torch/JAX/TF tensor"
    )


def _from_int(key: str, value: Any) -> float:
    if -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
        return float(value)
    raise InvalidValueError(
        f"key {key!r}: integer {value} is not exactly representable as a float64 scalar "
        f"(|value| must be <= 2**53); log it with log_record() to keep it exactly"
    )


def _from_float(key: str, value: Any) -> float:
    return float(value)


def _from_numpy_scalar(key: str, value: Any) -> float:
    kind = value.dtype.kind
    if kind in "iu":
        return _from_int(key, int(value))
    if kind not in "bf":  # complex, datetime64, timedelta64, void, ...
        raise _expected(key, value, f"dtype {value.dtype} is not a real number")
    return float(value)


def _from_ndarray(key: str, value: np.ndarray) -> float:
    if value.ndim != 0:
        raise _array_error(key, value.shape)
    if value.dtype.kind not in "biuf":
        raise _expected(key, value, f"dtype {value.dtype} is not numeric")
    return _from_numpy_scalar(key, value[()])


def _array_error(key: str, shape: Any) -> KindMismatchError:
    return KindMismatchError(
        f"key {key!r} holds scalars; got an array of shape {tuple(shape)} (log tensors "
        "under their own key)"
    )


def _from_torch(key: str, value: Any) -> Any:
    if value.dim() != 0:
        raise _array_error(key, value.shape)
    if value.is_complex():
        raise _expected(key, value, "complex numbers are not scalars")
    if value.device.type == "cpu":
        item = value.item()
        return (
            _from_int(key, item)
            if isinstance(item, int) and not isinstance(item, bool)
            else float(item)
        )
    return DEFER


def _from_jax(key: str, value: Any) -> Any:
    if value.ndim != 0:
        raise _array_error(key, value.shape)
    if np.dtype(value.dtype).kind not in "biuf":
        raise _expected(key, value, f"dtype {value.dtype} is not numeric")
    devices = value.devices() if callable(getattr(value, "devices", None)) else set()
    if all(getattr(d, "platform", "cpu") == "cpu" for d in devices):
        return float(value)
    return DEFER


def _from_generic(key: str, value: Any) -> float:
    """TensorFlow eager tensors and other array-likes with ``numpy()`` or ``__array__``."""
    array = value.numpy() if callable(getattr(value, "numpy", None)) else np.asarray(value)
    if not isinstance(array, np.ndarray):
        return _from_numpy_scalar(key, array)
    return _from_ndarray(key, array)


def _reject(key: str, value: Any) -> float:
    raise _expected(key, value)


_CONVERTERS: dict[type, Converter] = {
    float: _from_float,
    int: _from_int,
    bool: _from_float,
}


def _choose(cls: type) -> Converter:
    module = cls.__module__ or ""
    if issubclass(cls, (str, bytes, bytearray, complex)) or cls is type(None):
        return _reject
    if issubclass(cls, bool):
        return _from_float
    if issubclass(cls, int):
        return lambda key, value: _from_int(key, int(value))
    if issubclass(cls, np.generic):
        return _from_numpy_scalar
    if issubclass(cls, np.ndarray):
        return _from_ndarray
    if issubclass(cls, float):
        return _from_float
    if module.startswith("torch"):
        return _from_torch
    if module.startswith(("jax", "jaxlib")):
        return _from_jax
    if hasattr(cls, "numpy") or hasattr(cls, "__array__"):
        return _from_generic
    return _reject


def to_scalar(key: str, value: Any) -> Any:
    """The float to record for ``value``, or :data:`DEFER` for a device scalar."""
    converter = _CONVERTERS.get(type(value))
    if converter is None:
        converter = _CONVERTERS[type(value)] = _choose(type(value))
    return converter(key, value)


#: How deep records and params may nest; deeper (or self-containing) values are refused.
MAX_RECORD_DEPTH = 100


def json_value(value: Any, root: str, refuse: Callable[[str], Exception]) -> Any:
    """``value`` as plain JSON data: dicts with string keys, lists, str, int, float, bool,
    None. The one conversion records, params and command-line output go through.

    Tuples and sets become lists, NumPy/torch values their ``tolist()``, int and float
    subclasses (``IntEnum``) plain numbers; NaN and infinities are kept. Anything else
    (a field name that is not a string, text with a lone surrogate, which no store can
    keep, an object JSON cannot hold, nesting deeper than :data:`MAX_RECORD_DEPTH`) is
    refused with ``refuse(message)`` raised, the message naming the place
    (``root['a'][2]``) and what was found.
    """
    return _plain_value(value, root, 0, refuse)


def plain_record(key: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` as plain JSON data (:func:`json_value`); ``InvalidValueError`` names the
    key and the place of what cannot be stored. A top-level field ``step`` is refused too:
    ``RunView.records()`` puts the step in that column.
    """
    if "step" in record:
        raise InvalidValueError(
            f"key {key!r}: record field 'step' clashes with the step column of "
            "RunView.records(); rename the field (the step is recorded anyway)"
        )

    def refuse(message: str) -> InvalidValueError:
        return InvalidValueError(f"key {key!r}: record is not JSON-serialisable: {message}")

    return json_value(record, "record", refuse)  # type: ignore[no-any-return]


def record_json(key: str, record: Mapping[str, Any]) -> str:
    """A record as JSON text (see :func:`plain_record`)."""
    return json.dumps(plain_record(key, record), allow_nan=True)


def plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Hyper-parameters as plain JSON data (:func:`json_value`); ``InvalidArgumentError``
    names the place of what cannot be stored."""

    def refuse(message: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"params: not JSON-serialisable: {message}")

    return json_value(dict(params), "params", refuse)  # type: ignore[no-any-return]


def merged_params(held: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``held`` updated with ``new``, nested mappings merged key by key (later values win)."""
    merged = dict(held)
    for key, value in new.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = merged_params(old, value)
        else:
            merged[key] = value
    return merged


def text_nonfinite(value: Any) -> Any:
    """Plain JSON data with NaN and infinities as the strings ``nan``, ``inf``, ``-inf``,
    for output that must be strict JSON (the command line's ``--json``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): text_nonfinite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [text_nonfinite(v) for v in value]
    return value


def _plain_value(value: Any, where: str, depth: int, refuse: Callable[[str], Exception]) -> Any:
    if isinstance(value, str):
        if not value.isascii() and not _is_unicode(value):
            raise refuse(
                f"{where} holds text {value!r:.60} that is not valid Unicode text; {_UTF8}"
            )
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # IntEnum and friends
    if isinstance(value, float):
        return float(value)
    if depth >= MAX_RECORD_DEPTH:
        raise refuse(f"{where} nests deeper than {MAX_RECORD_DEPTH} levels (or contains itself)")
    if isinstance(value, Mapping):
        plain = {}
        for name, item in value.items():
            if isinstance(name, str) and not name.isascii() and not _is_unicode(name):
                raise refuse(
                    f"{where} has field name {name!r:.60} that is not valid Unicode text; {_UTF8}"
                )
            if not isinstance(name, str):
                raise refuse(
                    f"{where} has field name {name!r} of type {type(name).__name__}; "
                    "expected string field names"
                )
            plain[name] = _plain_value(item, f"{where}[{name!r}]", depth + 1, refuse)
        return plain
    if isinstance(value, (list, tuple, set, frozenset)):
        return [
            _plain_value(item, f"{where}[{i}]", depth + 1, refuse) for i, item in enumerate(value)
        ]
    if callable(getattr(value, "tolist", None)):  # NumPy arrays and scalars, torch tensors
        try:
            converted = value.tolist()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise refuse(_not_json(value, where, str(exc))) from None
        if converted is value:
            raise refuse(_not_json(value, where))
        return _plain_value(converted, where, depth + 1, refuse)
    raise refuse(_not_json(value, where))


_UTF8 = "expected strings that encode as UTF-8"


def require_unicode(text: str, what: str, expected: str) -> None:
    """Refuse ``text`` unless it encodes as UTF-8: a lone surrogate is not Unicode, so no
    store can keep it. ``what`` names the text in the error, ``expected`` what would do."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidValueError(
            f"{what}: not valid Unicode text ({exc.reason} at position {exc.start}); "
            f"expected {expected}"
        ) from None


def _is_unicode(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogates, which no store can keep)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_json(value: Any, where: str, why: str = "") -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    reason = f" ({why})" if why else ""
    return (
        f"{where} is {shown} of type {type(value).__name__}{reason}; expected a dict of "
        "strings, numbers, booleans, None, lists and dicts"
    )
