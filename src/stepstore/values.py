"""What a logged value is: a host number, a device scalar to resolve later, or an error.

Converters are chosen once per Python type and cached, so the common types cost one dict
lookup. Framework types are recognised by their module name; no framework is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import InvalidValueError, KindMismatchError

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
    if isinstance(value, np.integer):
        return _from_int(key, int(value))
    if isinstance(value, np.complexfloating):
        raise _expected(key, value, "complex numbers are not scalars")
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
