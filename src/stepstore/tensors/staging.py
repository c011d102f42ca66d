"""The training thread's share of tensor capture: one copy into a reusable staging buffer.

NumPy and torch CPU tensors are copied into a host buffer taken from a small pool; torch
CUDA tensors are copied into pinned host memory with ``non_blocking=True`` and an event is
recorded, which the writer thread waits on. JAX arrays on an accelerator are copied on their
device (the original may be donated to the next step) and read to the host by the writer.
Nothing here synchronises the device.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, NamedTuple

import numpy as np

from ..errors import InvalidValueError
from .dtypes import dtype_name, storage_dtype


class Staged(NamedTuple):
    """A staged copy: the host array (or pinned tensor, or JAX device array), its dtype name
    and what the writer waits on: a CUDA event, :data:`ON_DEVICE` or None."""

    array: Any
    dtype: str
    event: Any


#: The ``event`` of a staged JAX device array: the writer reads it to the host itself.
ON_DEVICE = object()


def is_array(value: Any) -> bool:
    """Whether ``value`` is an array/tensor with at least one dimension."""
    ndim = getattr(value, "ndim", None)
    return isinstance(ndim, int) and ndim >= 1 and not isinstance(value, (str, bytes))


class StagingPool:
    """Reusable host buffers per (shape, dtype), up to ``max_bytes`` kept, so steady-state
    capture allocates (and page-faults) nothing.

    The training thread takes buffers and the writer gives them back once the data they
    hold is written, never before (a job retried after a failure reads its buffer again).
    The most recently given buffer is taken first: it is the likeliest to be in cache.
    """

    def __init__(self, max_bytes: int) -> None:
        self._free: dict[tuple[Any, ...], deque[Any]] = {}
        self._max_bytes = max_bytes
        self._kept_bytes = 0
        self._lock = threading.Lock()  # both threads update the count

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A host buffer of this shape and dtype (its contents are garbage)."""
        buffer = self._reuse((shape, dtype.str))
        return np.empty(shape, dtype) if buffer is None else buffer

    def take_pinned(self, tensor: Any) -> Any:
        """A pinned host tensor like ``tensor`` (CUDA capture)."""
        import torch

        buffer = self._reuse((tuple(tensor.shape), str(tensor.dtype), "pinned"))
        if buffer is None:
            buffer = torch.empty(tuple(tensor.shape), dtype=tensor.dtype, pin_memory=True)
        return buffer

    def _reuse(self, slot: tuple[Any, ...]) -> Any:
        """A kept buffer for ``slot``, or None."""
        with self._lock:
            free = self._free.get(slot)
            if not free:
                return None
            buffer = free.pop()
            self._kept_bytes -= buffer.nbytes
            return buffer

    def give(self, staged: Staged) -> None:
        """Return a staged copy's buffer once the writer is done with it."""
        if staged.event is ON_DEVICE:
            return  # JAX's own memory, not a pool buffer
        buffer = staged.array
        if isinstance(buffer, np.ndarray):
            slot: tuple[Any, ...] = (buffer.shape, buffer.dtype.str)
        else:
            slot = (tuple(buffer.shape), str(buffer.dtype), "pinned")
        with self._lock:
            if self._kept_bytes + buffer.nbytes <= self._max_bytes:
                self._kept_bytes += buffer.nbytes
                self._free.setdefault(slot, deque()).append(buffer)


#: NumPy/torch dtype -> (stepstore dtype name, NumPy storage dtype), learnt on first use:
#: NumPy's ``dtype.name`` and ``np.dtype(str)`` are Python code that, run cold at every
#: step, cost a measurable share of ``log()``.
_DTYPES: dict[Any, tuple[str, np.dtype]] = {}


def _dtypes(dtype: Any, key: str) -> tuple[str, np.dtype]:
    """The stepstore name and storage dtype of ``dtype``; raises for unsupported ones."""
    known = _DTYPES.get(dtype)
    if known is None:
        name = dtype_name(dtype, key)
        known = _DTYPES[dtype] = (name, storage_dtype(name))
    return known


def stage(key: str, value: Any, pool: StagingPool) -> Staged:
    """Copy a tensor for the writer; raises ``InvalidValueError`` for unsupported values."""
    if type(value) is np.ndarray:
        return _stage_host(key, value, *_dtypes(value.dtype, key), pool)
    module = type(value).__module__ or ""
    if module.startswith("torch"):
        tensor = value.detach()
        name, storage = _dtypes(tensor.dtype, key)
        if str(tensor.layout) != "torch.strided" or tensor.device.type == "meta":
            raise InvalidValueError(
                f"key {key!r}: cannot record a {str(tensor.layout).removeprefix('torch.')} "
                f"tensor on device {tensor.device.type!r}; expected a dense (strided) tensor "
                "with data (call .to_dense() first)"
            )
        tensor = tensor.resolve_neg()  # a lazily negated view (x.conj().imag): no numpy()
        if tensor.device.type != "cpu":
            import torch

            pinned = pool.take_pinned(tensor)
            pinned.copy_(tensor, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return Staged(pinned, name, event)
        if name == "bfloat16":
            import torch

            tensor = tensor.view(torch.int16)
        return _stage_host(key, tensor.numpy(), name, storage, pool)
    if module.startswith("jax") and hasattr(value, "devices"):
        return _stage_jax(key, value, pool)
    try:
        source = np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidValueError(
            f"key {key!r}: cannot read {type(value).__name__} as an array ({exc})"
        ) from None
    return _stage_host(key, source, *_dtypes(source.dtype, key), pool)


def _stage_jax(key: str, value: Any, pool: StagingPool) -> Staged:
    """A JAX array: copied to a pool buffer on the CPU; on an accelerator, copied on the
    device (the original may be donated to the next step) with its host transfer started."""
    name, storage = _dtypes(np.dtype(value.dtype), key)
    if all(device.platform == "cpu" for device in value.devices()):
        return _stage_host(key, np.asarray(value), name, storage, pool)
    copy = value.copy()
    copy.copy_to_host_async()
    return Staged(copy, name, ON_DEVICE)


def _stage_host(
    key: str, source: np.ndarray, name: str, storage: np.dtype, pool: StagingPool
) -> Staged:
    """Copy a host array into a pool buffer of its storage dtype."""
    if name == "bfloat16":
        source = source.view(np.uint16)
    buffer = pool.take(source.shape, storage)
    try:
        np.copyto(buffer, source, casting="unsafe")
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"key {key!r}: cannot copy tensor ({exc})") from None
    return Staged(buffer, name, None)


def host_array(staged: Staged) -> np.ndarray:
    """The staged data as a host NumPy array in its storage dtype (waits for CUDA copies)."""
    if staged.event is None:
        return staged.array
    if staged.event is ON_DEVICE:
        return np.asarray(staged.array).view(storage_dtype(staged.dtype))
    staged.event.synchronize()
    tensor = staged.array
    if staged.dtype == "bfloat16":
        import torch

        tensor = tensor.view(torch.int16)
    return tensor.numpy().view(storage_dtype(staged.dtype))
