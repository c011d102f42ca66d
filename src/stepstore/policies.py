"""Capture policies: which offered points of a key are recorded.

A policy is a small immutable object. Policies combine with ``|`` (either accepts) and
``&`` (both accept) and are bound to key patterns with ``Run.policy()`` or per call with
``log(..., when=)``. Every decision depends only on the offered point and on the key's
*recorded* history (its last recorded step and epoch, how many points it kept, and the
trigger values at its last recorded point), so combinations behave predictably:

==========================  ===============================================================
``every(n)``                steps divisible by ``n``
``every_epoch()``           the first point offered in each new epoch
``at(*steps)``              exactly these steps
``log_spaced(base=2)``      dense early, sparse late: the first point at or after each mark
                            0, 1, 2, 4, 8, ... (marks grow by ``base``, at least by one)
``on_change(key, rel, abs)``  when ``key``'s latest value differs from its value at the last
                            recorded point by more than ``max(rel*|ref|, abs)`` (any change
                            when neither is given; a change into or out of NaN counts)
``first(n)``                until ``n`` points of the key have been recorded
``window(start, stop)``     steps with ``start <= step < stop`` (``stop=None``: no end)
``on_nan(key)``             while ``key``'s latest value is NaN or infinite
==========================  ===============================================================

Triggers: ``on_nan(key)``, ``on_change(key, rel, abs)`` and ``on_exception()`` (and their
``|`` and ``&`` combinations) also tell a flight recorder when to keep its ring:
``Policy.arm()`` gives a fresh :data:`Fire` check with its own memory of the values seen.
"""

from __future__ import annotations

import math
import numbers
import operator
from bisect import bisect_right
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidArgumentError, InvalidValueError

if TYPE_CHECKING:  # the run's per-key state that compiled policies read
    from .recording.keys import KeyState

#: A compiled policy: ``check(step, epoch, key_state) -> bool``.
Check = Callable[[int, "int | None", "KeyState"], bool]
#: An armed trigger: ``fire(values, error) -> (key, reason)`` when it fires, else None;
#: ``values`` maps keys to the values just logged, ``error`` is an exception ending training.
Fire = Callable[[Mapping[str, Any], "BaseException | None"], "tuple[str | None, str] | None"]


class Policy:
    """Base of all capture policies; immutable, combinable with ``|`` and ``&``."""

    __slots__ = ()
    __array_ufunc__ = None  # ``array | policy``: NumPy leaves it to __ror__, which refuses

    def __or__(self, other: Policy) -> Policy:
        return AnyOf(self, _as_policy(other, "|"))

    def __and__(self, other: Policy) -> Policy:
        return AllOf(self, _as_policy(other, "&"))

    def __ror__(self, other: Any) -> Policy:  # ``3 | every(2)``: the left side is no policy
        return AnyOf(_as_policy(other, "|"), self)

    def __rand__(self, other: Any) -> Policy:
        return AllOf(_as_policy(other, "&"), self)

    def compile(self, latest: Mapping[str, float]) -> Check:
        """Return the fast predicate for this policy; ``latest`` maps trigger keys to values."""
        raise NotImplementedError

    @property
    def triggers(self) -> frozenset[str]:
        """Keys whose values this policy reads (``on_change``, ``on_nan``)."""
        return frozenset()

    def arm(self) -> Fire:
        """Return a fresh trigger check for a flight recorder (see :data:`Fire`).

        Raises:
            InvalidArgumentError: The policy is no trigger (only ``on_nan``,
                ``on_change``, ``on_exception`` and their combinations are).
        """
        raise InvalidArgumentError(
            f"trigger={self!r}: a capture policy, not a trigger; expected on_nan(key), "
            "on_change(key, rel=...), on_exception() or a combination of them"
        )

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")


def _as_policy(value: Any, op: str) -> Policy:
    if not isinstance(value, Policy):
        raise InvalidArgumentError(
            f"cannot combine a policy with {value!r} using {op!r}: expected another policy"
        )
    return value


def _check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int (a Python or NumPy integer, not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidArgumentError(f"{name}={value!r}: expected an integer >= {minimum}")
    return operator.index(value)


def _as_real(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool); None if it is not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond 1.8e308
        return -math.inf if value < 0 else math.inf


class every(Policy):  # noqa: N801 - policies read as verbs in user code
    """Record steps divisible by ``n``."""

    __slots__ = ("n",)
    n: int

    def __init__(self, n: int) -> None:
        object.__setattr__(self, "n", _check_int("every(n)", n, 1))

    def compile(self, latest: Mapping[str, float]) -> Check:
        n = self.n
        return lambda step, epoch, ks: step % n == 0

    def __repr__(self) -> str:
        return f"every({self.n})"


class every_epoch(Policy):  # noqa: N801
    """Record the first point offered in each epoch (points need ``epoch=``)."""

    __slots__ = ()

    def compile(self, latest: Mapping[str, float]) -> Check:
        return lambda step, epoch, ks: (
            epoch is not None and (ks.count == 0 or epoch != ks.last_epoch)
        )

    def __repr__(self) -> str:
        return "every_epoch()"


class at(Policy):  # noqa: N801
    """Record exactly the given steps."""

    __slots__ = ("steps",)
    steps: frozenset[int]

    def __init__(self, *steps: int) -> None:
        if not steps:
            raise InvalidArgumentError("at(): expected at least one step")
        checked = frozenset(_check_int("at(step)", s, 0) for s in steps)
        object.__setattr__(self, "steps", checked)

    def compile(self, latest: Mapping[str, float]) -> Check:
        steps = self.steps
        return lambda step, epoch, ks: step in steps

    def __repr__(self) -> str:
        return f"at({', '.join(map(str, sorted(self.steps)))})"


#: The smallest ``log_spaced`` base: 37,000 marks below 2**63 (base 2: 64).
MIN_LOG_BASE = 1.001


class log_spaced(Policy):  # noqa: N801
    """Record densely early and sparsely late: the first point at or after each mark.

    Marks are 0, 1, then each mark times ``base`` rounded up (and at least one more than the
    previous mark): 0, 1, 2, 4, 8, ... for ``base=2``. ``base`` is a finite number of at
    least :data:`MIN_LOG_BASE` (1.001).
    """

    __slots__ = ("base", "marks")
    base: float
    marks: tuple[int, ...]

    def __init__(self, base: float = 2) -> None:
        number: float | None = _as_real(base)
        if isinstance(base, numbers.Integral) and number is not None:
            number = operator.index(base)  # exact marks for any int, however large
        if number is None or not 1 < number < math.inf:
            raise InvalidArgumentError(
                f"log_spaced(base={base!r}): expected a number > 1 (and finite)"
            )
        if number < MIN_LOG_BASE:  # marks would grow by one for ages: millions of them
            raise InvalidArgumentError(
                f"log_spaced(base={base!r}): expected a number >= {MIN_LOG_BASE}; a base "
                "closer to 1 records nearly every step (use every(1) for that)"
            )
        object.__setattr__(self, "base", number)
        object.__setattr__(self, "marks", tuple(log_spaced_marks(number)))

    def compile(self, latest: Mapping[str, float]) -> Check:
        marks = self.marks
        return lambda step, epoch, ks: (
            ks.count == 0 or step >= marks[bisect_right(marks, ks.last_step)]
        )

    def __repr__(self) -> str:
        return f"log_spaced(base={self.base!r})"


def log_spaced_marks(base: float, limit: int = 1 << 63) -> list[int]:
    """The marks of ``log_spaced(base)`` below ``limit``, ascending."""
    marks = [0, 1]
    while marks[-1] < limit:
        marks.append(max(marks[-1] + 1, math.ceil(marks[-1] * base)))
    return marks


class on_change(Policy):  # noqa: N801
    """Record when ``key`` moved by more than ``max(rel*|ref|, abs)`` since the last record.

    ``ref`` is ``key``'s value when the bound key was last recorded; the first offered point
    is always recorded; a change into or out of NaN counts as a change. With neither ``rel``
    nor ``abs`` any change counts. ``key`` must be a scalar logged in the same or an earlier
    call; until it has been logged, points are not recorded.
    """

    __slots__ = ("abs", "key", "rel")
    key: str
    rel: float | None
    abs: float | None

    def __init__(self, key: str, rel: float | None = None, abs: float | None = None) -> None:  # noqa: A002
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"on_change(key={key!r}): expected a non-empty key name")
        for name, value in (("rel", rel), ("abs", abs)):
            number = None if value is None else _as_real(value)
            if value is not None and (number is None or not number >= 0):
                raise InvalidArgumentError(
                    f"on_change({name}={value!r}): expected a number >= 0 or None"
                )
            if value is not None and not (type(value) in (int, float) and value == number):
                value = number  # NumPy scalars, Fractions, ints beyond a float (inf)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "key", key)

    @property
    def triggers(self) -> frozenset[str]:
        return frozenset((self.key,))

    def compile(self, latest: Mapping[str, float]) -> Check:
        key, rel, tol = self.key, float(self.rel or 0.0), float(self.abs or 0.0)
        missing = object()

        def check(step: int, epoch: int | None, ks: KeyState) -> bool:
            value = latest.get(key, missing)
            if value is missing:
                return False
            ref = ks.refs.get(key, missing)
            if ref is missing:
                return True
            return changed(ref, value, rel, tol)  # type: ignore[arg-type]

        return check

    def arm(self) -> Fire:
        """Fires when ``key`` moved by more than ``max(rel*|prev|, abs)`` since the value
        offered before (the first value only sets the reference)."""
        key, rel, tol = self.key, float(self.rel or 0.0), float(self.abs or 0.0)
        seen: list[float] = []

        def fire(
            values: Mapping[str, Any], error: BaseException | None
        ) -> tuple[str | None, str] | None:
            if key not in values:
                return None
            value = _scalar(key, values[key])
            if not seen:
                seen.append(value)
                return None
            ref, seen[0] = seen[0], value
            if not changed(ref, value, rel, tol):
                return None
            return key, f"{key} changed from {ref:.6g} to {value:.6g}"

        return fire

    def __repr__(self) -> str:
        args = [repr(self.key)]
        if self.rel is not None:
            args.append(f"rel={self.rel!r}")
        if self.abs is not None:
            args.append(f"abs={self.abs!r}")
        return f"on_change({', '.join(args)})"


def _scalar(key: str, value: Any) -> float:
    """A trigger's scalar as a float (a 0-d tensor or array is read, on the host)."""
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        raise InvalidValueError(
            f"trigger key {key!r}: expected a scalar value, got {type(value).__name__} "
            f"{getattr(value, 'shape', '')}"
        ) from None


def non_finite(value: Any) -> str | None:
    """How ``value`` (a number, NumPy array or torch tensor) is not finite, or None if it is.

    For an array or tensor this reads all of it (a device tensor waits for the device).
    """
    if hasattr(value, "isfinite") and hasattr(value, "detach"):  # torch
        if not (value.is_floating_point() or value.is_complex()):
            return None
        finite = value.detach().isfinite()
        if bool(finite.all()):
            return None
        bad = value.detach()[~finite]
        nan = int(bad.isnan().sum())
        return _describe(value.numel(), nan, int(bad.numel()) - nan)
    array = np.asarray(value)
    if array.dtype.kind not in "fc":
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    nan = int(np.isnan(array).sum())
    return _describe(array.size, nan, int(array.size - finite.sum()) - nan)


def _describe(size: int, nan: int, inf: int) -> str:
    kinds = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "inf")) if n)
    return f"is {'NaN' if nan else 'inf'}" if size == 1 else f"has {kinds} of {size} values"


class on_nan(Policy):  # noqa: N801
    """NaN or infinity in ``key``: a trigger, and a capture policy.

    As a trigger (``Policy.arm``) it fires when a value of ``key``, a scalar or any
    element of an array or tensor, is NaN or infinite after finite ones (or first): once
    per blow-up, not at every step that stays non-finite. As a capture policy it records
    the bound key while ``key``'s latest value is NaN or infinite (``key`` a scalar).
    """

    __slots__ = ("key",)
    key: str

    def __init__(self, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"on_nan(key={key!r}): expected a non-empty key name")
        object.__setattr__(self, "key", key)

    @property
    def triggers(self) -> frozenset[str]:
        return frozenset((self.key,))

    def compile(self, latest: Mapping[str, float]) -> Check:
        key = self.key

        def check(step: int, epoch: int | None, ks: KeyState) -> bool:
            value = latest.get(key)
            return value is not None and not math.isfinite(value)

        return check

    def arm(self) -> Fire:
        key = self.key
        bad = [False]  # whether the last value seen was not finite

        def fire(
            values: Mapping[str, Any], error: BaseException | None
        ) -> tuple[str | None, str] | None:
            if key not in values:
                return None
            how = non_finite(values[key])
            was, bad[0] = bad[0], how is not None
            if how is None or was:
                return None
            return key, f"{key} {how}"

        return fire

    def __repr__(self) -> str:
        return f"on_nan({self.key!r})"


class on_exception(Policy):  # noqa: N801
    """An exception ending the training: a trigger only.

    It fires when the run sees an uncaught exception (its ``with`` block or the program
    ends with one). As a capture policy it records nothing.
    """

    __slots__ = ()

    def compile(self, latest: Mapping[str, float]) -> Check:
        return lambda step, epoch, ks: False

    def arm(self) -> Fire:
        def fire(
            values: Mapping[str, Any], error: BaseException | None
        ) -> tuple[str | None, str] | None:
            if error is None:
                return None
            return None, f"{type(error).__name__}: {error}"

        return fire

    def __repr__(self) -> str:
        return "on_exception()"


def changed(ref: float, value: float, rel: float, tol: float) -> bool:
    """Whether ``value`` differs from ``ref`` by more than ``max(rel*|ref|, tol)``."""
    if value == ref:
        return False
    if value != value or ref != ref:  # NaN on one side only (both NaN compare unequal too)
        return (value != value) != (ref != ref)
    if math.isinf(value) or math.isinf(ref):
        return True
    return abs(value - ref) > max(rel * abs(ref), tol)


class first(Policy):  # noqa: N801
    """Record until ``n`` points of the key have been recorded."""

    __slots__ = ("n",)
    n: int

    def __init__(self, n: int) -> None:
        object.__setattr__(self, "n", _check_int("first(n)", n, 1))

    def compile(self, latest: Mapping[str, float]) -> Check:
        n = self.n
        return lambda step, epoch, ks: ks.count < n

    def __repr__(self) -> str:
        return f"first({self.n})"


class window(Policy):  # noqa: N801
    """Record steps with ``start <= step < stop`` (``stop=None`` for no end)."""

    __slots__ = ("start", "stop")
    start: int
    stop: int | None

    def __init__(self, start: int, stop: int | None = None) -> None:
        start = _check_int("window(start)", start, 0)
        if stop is not None:
            stop = _check_int("window(stop)", stop, start + 1)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    def compile(self, latest: Mapping[str, float]) -> Check:
        start, stop = self.start, self.stop
        if stop is None:
            return lambda step, epoch, ks: step >= start
        return lambda step, epoch, ks: start <= step < stop

    def __repr__(self) -> str:
        return f"window({self.start}, {self.stop})"


class _Combined(Policy):
    """Two policies joined by an operator; subclasses say how their decisions combine."""

    __slots__ = ("a", "b")
    a: Policy
    b: Policy
    symbol = ""

    def __init__(self, a: Policy, b: Policy) -> None:
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)

    @property
    def triggers(self) -> frozenset[str]:
        return self.a.triggers | self.b.triggers

    def __repr__(self) -> str:
        return f"({self.a!r} {self.symbol} {self.b!r})"


class AnyOf(_Combined):
    """Records what either policy records (``a | b``)."""

    __slots__ = ()
    symbol = "|"

    def compile(self, latest: Mapping[str, float]) -> Check:
        a, b = self.a.compile(latest), self.b.compile(latest)
        return lambda step, epoch, ks: a(step, epoch, ks) or b(step, epoch, ks)

    def arm(self) -> Fire:
        """Fires when either trigger fires (both see every value)."""
        a, b = self.a.arm(), self.b.arm()

        def fire(
            values: Mapping[str, Any], error: BaseException | None
        ) -> tuple[str | None, str] | None:
            first, second = a(values, error), b(values, error)
            return first or second

        return fire


class AllOf(_Combined):
    """Records what both policies record (``a & b``)."""

    __slots__ = ()
    symbol = "&"

    def compile(self, latest: Mapping[str, float]) -> Check:
        a, b = self.a.compile(latest), self.b.compile(latest)
        return lambda step, epoch, ks: a(step, epoch, ks) and b(step, epoch, ks)

    def arm(self) -> Fire:
        """Fires when both triggers fire on the same values."""
        a, b = self.a.arm(), self.b.arm()

        def fire(
            values: Mapping[str, Any], error: BaseException | None
        ) -> tuple[str | None, str] | None:
            first, second = a(values, error), b(values, error)
            if first is None or second is None:
                return None
            return first[0] or second[0], f"{first[1]} and {second[1]}"

        return fire
