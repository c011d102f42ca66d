"""The dtypes a tensor series keeps, and their Zarr v3 names."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidValueError

#: dtype name -> (Zarr v3 data_type, NumPy storage dtype). bfloat16 is stored as its raw
#: 16-bit pattern (Zarr v3 has no core bfloat16) and read back as ``ml_dtypes.bfloat16``.
DTYPES: dict[str, tuple[str, str]] = {
    "bool": ("bool", "|b1"),
    "int8": ("int8", "|i1"),
    "int16": ("int16", "<i2"),
    "int32": ("int32", "<i4"),
    "int64": ("int64", "<i8"),
    "uint8": ("uint8", "|u1"),
    "uint16": ("uint16", "<u2"),
    "uint32": ("uint32", "<u4"),
    "uint64": ("uint64", "<u8"),
    "float16": ("float16", "<f2"),
    "float32": ("float32", "<f4"),
    "float64": ("float64", "<f8"),
    "bfloat16": ("uint16", "<u2"),
}


def dtype_name(dtype: Any, key: str) -> str:
    """The stepstore dtype name of a NumPy/torch/JAX dtype; raises for unsupported ones.

    Byte order does not matter: big-endian ``>i4`` is stored (little-endian) as int32.
    """
    if isinstance(dtype, np.dtype) and dtype.names is None and dtype.name in DTYPES:
        return dtype.name
    name = str(dtype).removeprefix("torch.")
    if name in DTYPES:
        return name
    aliases = {
        "float": "float32",
        "double": "float64",
        "half": "float16",
        "long": "int64",
        "int": "int32",
        "short": "int16",
    }
    if name in aliases:
        return aliases[name]
    raise InvalidValueError(
        f"key {key!r}: tensors of dtype {name} are not supported; expected one of "
        f"{', '.join(DTYPES)}"
    )


def storage_dtype(name: str) -> np.dtype:
    """The NumPy dtype the bytes of a series are stored as."""
    return np.dtype(DTYPES[name][1])


def logical_dtype(name: str) -> np.dtype:
    """The NumPy dtype reads return: the logged dtype (bfloat16 needs ml_dtypes)."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - ml_dtypes comes with the torch extra
            return storage_dtype(name)
        return np.dtype(ml_dtypes.bfloat16)
    return storage_dtype(name)


def common_dtype(names: list[str]) -> np.dtype:
    """The dtype that holds tensors of every dtype in ``names`` (a series whose dtype
    changed during the run keeps each segment's own; reading across them promotes)."""
    dtypes = [logical_dtype(name) for name in dict.fromkeys(names)]
    if len(dtypes) == 1:
        return dtypes[0]
    if {"bfloat16", "float16"} <= {dtype.name for dtype in dtypes}:
        # float32 holds both exactly; ml_dtypes before 0.5 has no rule for the pair
        dtypes = [np.dtype(np.float32) if d.name == "bfloat16" else d for d in dtypes]
    try:
        return np.result_type(*dtypes)
    except TypeError:  # bfloat16 beside a wide integer on older ml_dtypes: no rule
        return np.dtype(np.float64)
