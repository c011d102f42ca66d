"""The flight ring: the last K steps of some tensor keys, held in preallocated memory.

Each key gets ``K`` slots on its first value (its shape and dtype are fixed then); a step
costs one copy into the next slot and no I/O. NumPy values are held in host memory; torch
tensors in a host torch tensor, or with ``device=True`` in a tensor on their own device
that is copied to the host only when the ring is drained. The ring's size, K times the
bytes of a step of every key, is checked against a byte budget before anything is
allocated: for keys whose sizes are known in advance through :meth:`FlightRing.reserve`,
and for the others when their first value arrives.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import FlightBudgetError, InvalidArgumentError, InvalidValueError, StepOrderError

#: The default byte budget of a ring (1 GiB).
DEFAULT_FLIGHT_BUDGET = 1 << 30
#: How many of the largest keys a budget error names.
NAMED_KEYS = 5


class FlightSeries(NamedTuple):
    """The steps of one key a ring held, oldest first.

    ``values`` has the steps as its leading axis: a NumPy array, or a CPU torch tensor
    for dtypes NumPy has not (bfloat16).
    """

    steps: np.ndarray
    epochs: tuple[int | None, ...]
    times: np.ndarray
    values: Any


class _Slots:
    """One key's K slots and the step, epoch and time of each."""

    __slots__ = (
        "buffer",
        "count",
        "dtype",
        "epochs",
        "head",
        "host",
        "last",
        "shape",
        "steps",
        "times",
        "torch",
    )

    def __init__(self, buffer: Any, shape: tuple[int, ...], dtype: Any, size: int) -> None:
        self.buffer = buffer  # (size, *shape): a NumPy array or a torch tensor
        self.torch = not isinstance(buffer, np.ndarray)
        # a torch ring in host memory whose dtype NumPy has: its views are NumPy arrays
        self.host = self.torch and buffer.device.type == "cpu" and _numpy_dtype(buffer)
        self.shape = shape
        self.dtype = dtype
        self.steps = [0] * size
        self.epochs: list[int | None] = [None] * size
        self.times = [0.0] * size
        self.head = 0  # the slot the next new step goes to
        self.last = -1  # the slot of the newest step (-1: none held)
        self.count = 0


def _is_torch(value: Any) -> bool:
    return hasattr(value, "detach") and hasattr(value, "element_size")


def _numpy_dtype(tensor: Any) -> bool:
    """Whether a torch tensor's dtype has a NumPy equal (bfloat16 has none)."""
    try:
        tensor[:0].numpy()
    except TypeError:
        return False
    return True


def _size(nbytes: float) -> str:
    """``nbytes`` for people: ``100 B``, ``3.1 KiB``, ``1.0 GiB``."""
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    for unit in ("KiB", "MiB"):
        nbytes /= 1024
        if nbytes < 1024:
            return f"{nbytes:.1f} {unit}"
    return f"{nbytes / 1024:.1f} GiB"


class FlightRing:
    """The last ``steps`` values of each key put into it, in preallocated slots.

    Args:
        steps: How many steps of each key to hold (at least 1).
        budget: The most bytes the ring may hold, all keys together.
        device: Hold torch tensors on their own device (copied to the host on
            :meth:`drain`) instead of in host memory.

    Raises:
        InvalidArgumentError: ``steps`` or ``budget`` is not a positive integer.
    """

    def __init__(
        self, steps: int, budget: int = DEFAULT_FLIGHT_BUDGET, device: bool = False
    ) -> None:
        for name, value in (("steps", steps), ("budget", budget)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name}={value!r}: expected an integer >= 1")
        self.steps = steps
        self.budget = budget
        self.device = device
        self._slots: dict[str, _Slots] = {}
        self._views: dict[str, list[Any]] = {}
        self._sizes: dict[str, int] = {}  # bytes of one step, reserved or allocated

    def __repr__(self) -> str:
        return (
            f"<FlightRing steps={self.steps} keys={len(self._sizes)} "
            f"{_size(self.nbytes)} of {_size(self.budget)}>"
        )

    @property
    def keys(self) -> list[str]:
        """The keys reserved or holding slots, in the order they came."""
        return list(self._sizes)

    @property
    def nbytes(self) -> int:
        """Bytes of the ring once every reserved key holds its slots."""
        return self.steps * sum(self._sizes.values())

    def reserve(self, sizes: dict[str, int]) -> None:
        """Count keys whose bytes per step are known now against the budget.

        Their slots are allocated at their first value; a value of another size then
        fails as a shape change does.

        Raises:
            FlightBudgetError: The ring with these keys would exceed the budget; nothing
                is reserved then.
        """
        new = {key: int(size) for key, size in sizes.items() if key not in self._sizes}
        self._check_budget(new)
        self._sizes.update(new)

    def put(self, key: str, step: int, epoch: int | None, time: float, value: Any) -> None:
        """Copy ``value`` into ``key``'s slot for ``step``.

        A second value at the key's newest step replaces the first; a new step takes the
        next slot, over the oldest step once all are used.

        Raises:
            InvalidValueError: ``value`` has another shape or dtype than the key's first
                value, or is neither a NumPy array nor a torch tensor.
            StepOrderError: ``step`` is below the key's newest step.
            FlightBudgetError: the key's first value would take the ring over its budget.
        """
        slots = self._slots.get(key)
        if slots is None:
            slots = self._allocate(key, value)
        elif value.shape != slots.shape or value.dtype != slots.dtype:
            raise InvalidValueError(
                f"flight ring key {key!r}: expected shape {tuple(slots.shape)} {slots.dtype} "
                f"as at its first step, got {tuple(value.shape)} {value.dtype} at step {step}"
            )
        last = slots.last
        if last >= 0 and slots.steps[last] >= step:
            if slots.steps[last] > step:
                raise StepOrderError(
                    f"flight ring key {key!r}: step {step} is below its newest step "
                    f"{slots.steps[last]}; steps only go forward"
                )
            index = last
        else:
            index = slots.head
            slots.head = (index + 1) % self.steps
            slots.last = index
            if slots.count < self.steps:
                slots.count += 1
        view = self._views[key][index]
        if not slots.torch:
            view[...] = value
        elif not slots.host:
            view.copy_(value.detach() if value.requires_grad else value)
        elif value.is_cpu:  # NumPy copies host memory faster than copy_
            np.copyto(view, value.detach().numpy())
        else:  # a device tensor into host memory
            slots.buffer[index].copy_(value.detach())
        slots.steps[index] = step
        slots.epochs[index] = epoch
        slots.times[index] = time

    def drain(self) -> dict[str, FlightSeries]:
        """The held steps of every key, oldest first, and an empty ring (slots are kept).

        Keys that hold no step are left out; values are copies, the ring's memory is
        reused.
        """
        drained: dict[str, FlightSeries] = {}
        for key, slots in self._slots.items():
            if not slots.count:
                continue
            start = (slots.head - slots.count) % self.steps
            order = [(start + i) % self.steps for i in range(slots.count)]
            drained[key] = FlightSeries(
                steps=np.array([slots.steps[i] for i in order], dtype=np.int64),
                epochs=tuple(slots.epochs[i] for i in order),
                times=np.array([slots.times[i] for i in order], dtype=np.float64),
                values=self._gather(slots, order),
            )
            slots.head, slots.last, slots.count = 0, -1, 0
        return drained

    @staticmethod
    def _gather(slots: _Slots, order: list[int]) -> Any:
        if not slots.torch:
            return slots.buffer[order]
        import torch

        index = torch.tensor(order, device=slots.buffer.device)
        values = slots.buffer.index_select(0, index).cpu()
        return values if values.dtype == torch.bfloat16 else values.numpy()

    def _allocate(self, key: str, value: Any) -> _Slots:
        is_torch = _is_torch(value)
        if is_torch:
            shape, dtype = tuple(value.shape), value.dtype
            nbytes = int(value.numel()) * int(value.element_size())
        elif isinstance(value, np.ndarray):
            shape, dtype, nbytes = value.shape, value.dtype, value.nbytes
        else:
            raise InvalidValueError(
                f"flight ring key {key!r}: expected a NumPy array or a torch tensor, got "
                f"{type(value).__name__}"
            )
        reserved = self._sizes.get(key)
        if reserved is None:
            self._check_budget({key: nbytes})
        elif reserved != nbytes:
            raise InvalidValueError(
                f"flight ring key {key!r}: expected {reserved} bytes a step as reserved, got "
                f"{tuple(shape)} {dtype} ({nbytes} bytes)"
            )
        buffer: Any
        if is_torch:
            import torch

            where = value.device if self.device else "cpu"
            buffer = torch.empty((self.steps, *shape), dtype=dtype, device=where)
        else:
            buffer = np.empty((self.steps, *shape), dtype=dtype)
        slots = self._slots[key] = _Slots(buffer, shape, dtype, self.steps)
        self._sizes[key] = nbytes
        if slots.host:
            self._views[key] = list(buffer.numpy())
        elif slots.torch:
            self._views[key] = list(buffer.unbind(0))
        else:
            self._views[key] = list(buffer)
        return slots

    def _check_budget(self, new: dict[str, int]) -> None:
        sizes = {**self._sizes, **new}
        total = self.steps * sum(sizes.values())
        if total <= self.budget:
            return
        largest = sorted(sizes.items(), key=lambda item: -item[1])[:NAMED_KEYS]
        named = ", ".join(
            f"{key} ({_size(size)} a step, {_size(self.steps * size)})" for key, size in largest
        )
        raise FlightBudgetError(
            f"a flight ring of {self.steps} steps of {len(sizes)} keys needs {_size(total)}, "
            f"over its budget of {_size(self.budget)}; largest: {named}; hold fewer steps, "
            "select fewer keys or raise the budget"
        )
