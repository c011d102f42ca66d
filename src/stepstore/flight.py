"""The flight recorder: a ring of the last K steps of some keys, kept when a trigger fires.

A :class:`FlightRecorder` holds the tensors of the keys it selects in a
:class:`~stepstore.tensors.flight.FlightRing` (one copy per step, no I/O) and watches the
values of its trigger's keys. When the trigger fires, or on an explicit dump, the ring is
drained and the run persists it as ordinary tensor series at the steps they were taken,
records the next ``after`` steps of the selected keys raw, and stores the event.

How the run (``stepstore.recording.run``, through ``stepstore.recording.flights``) feeds
and persists its recorders:

- ``run.flight(pattern, steps=K, trigger=None, after=0, budget=DEFAULT_FLIGHT_BUDGET,
  device=False)`` builds a recorder and ``recorder.attach(run, fed=True)``: ``run.log()``
  feeds it. ``ss.torch.watch(..., flight=K)`` builds its own and attaches it with
  ``fed=False``: the watch's hooks feed it (``observe``) and ``run.log()`` only checks it.
- ``attach`` calls the run's ``_add_flight(recorder, fed)``, which keeps the recorder and
  returns the callable that persists one of its events: ``event, drained =
  recorder.dump(event)``; each write of ``flight_writes(drained, recorded={key: its last
  recorded step})`` is recorded raw (the key's capture policy bypassed) into the key's own
  tensor series at its step, epoch (None: the run's current epoch) and time; then the
  event is stored (``Backend.add_event``).
- ``run.log(values, step, ...)`` records a value its key's policy rejects when
  ``recorder.recording_after(key, step)``. Once the call has succeeded, each fed recorder
  gets ``observe(step, epoch, time, key, value)`` for each array or tensor value whose key
  it :meth:`~FlightRecorder.selects` (the ring holds every step), every recorder gets
  ``check(step, values)``, and the first event either returned is persisted.
- An uncaught exception (a ``with`` block's or the excepthook's, before the run is marked
  crashed) persists ``recorder.exception(error)`` when it is not None;
  ``run.dump_flight(reason)`` persists ``recorder.event(reason)`` of each recorder;
  ``finish()`` calls ``recorder.warn_unseen(f"run {name} ({id})")``.
- ``RunView.events()`` lists the stored events; ``stepstore show`` prints them.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from .errors import InvalidArgumentError, InvalidValueError, StepOrderError
from .policies import Policy
from .tensors.flight import DEFAULT_FLIGHT_BUDGET, FlightRing, FlightSeries

#: The trigger name of an event asked for by ``run.dump_flight(reason)``.
DUMP = "dump_flight"


class FlightEvent(NamedTuple):
    """Why a flight ring was kept: the trigger (its repr, or ``"dump_flight"``), the step it
    fired at, the key whose value fired it (None for exceptions and dumps) and a reason."""

    trigger: str
    step: int
    key: str | None
    reason: str


class FlightWrite(NamedTuple):
    """One value of a drained ring to record: a key at one of its steps."""

    key: str
    step: int
    epoch: int | None
    time: float
    value: Any


class FlightRecorder:
    """Keep the last ``steps`` steps of the selected keys; hand them over when triggered.

    Args:
        keys: A glob (``"activations/*"``) or a list of globs selecting the keys to hold.
        steps: How many steps to hold (K, at least 1).
        trigger: When to keep the ring: ``on_nan(key)``, ``on_change(key, rel=...)``,
            ``on_exception()`` or their ``|`` / ``&`` combinations; None for explicit
            dumps only.
        after: Steps after a firing whose selected values are recorded raw (M, >= 0).
        budget: The most bytes the ring may hold.
        device: Hold torch tensors in their device's memory until a dump.

    Raises:
        InvalidArgumentError: An argument is not acceptable (a capture policy that is no
            trigger among them).
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        steps: int,
        trigger: Policy | None = None,
        after: int = 0,
        budget: int = DEFAULT_FLIGHT_BUDGET,
        device: bool = False,
    ) -> None:
        patterns = (keys,) if isinstance(keys, str) else tuple(keys)
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise InvalidArgumentError(
                f"keys={keys!r}: expected a glob string or a list of them, e.g. 'activations/*'"
            )
        if trigger is not None and not isinstance(trigger, Policy):
            raise InvalidArgumentError(
                f"trigger={trigger!r}: expected a trigger such as stepstore.on_nan('loss'), or None"
            )
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InvalidArgumentError(f"after={after!r}: expected an integer >= 0")
        self.ring = FlightRing(steps, budget=budget, device=device)
        self.patterns = patterns
        self.trigger = trigger
        self.after = after
        self._fire = None if trigger is None else trigger.arm()
        self.trigger_keys = frozenset() if trigger is None else trigger.triggers
        self._seen: set[str] = set()
        self._skipped: set[str] = set()  # keys warned of for a value the ring cannot hold
        self._selected: dict[str, bool] = {}
        self._step = -1  # the newest step seen
        self._fired = -1  # the step of the last event
        self._until = -1  # the last step recorded raw after it
        self._persist: Callable[[FlightEvent], None] | None = None

    def __repr__(self) -> str:
        keys = ", ".join(self.patterns)
        return (
            f"<FlightRecorder {keys} steps={self.ring.steps} trigger={self.trigger!r} "
            f"after={self.after}>"
        )

    def attach(self, run: Any, *, fed: bool) -> None:
        """Hand the recorder to the run that persists it (its ``_add_flight(self, fed)``
        returns the callable :meth:`fire` persists events with); ``fed``: the run's
        ``log()`` feeds it the selected values, else the caller does (:meth:`observe`)."""
        self._persist = run._add_flight(self, fed)

    def fire(self, event: FlightEvent) -> None:
        """Have the run the recorder is attached to persist ``event`` (drain, writes, event).

        Raises:
            InvalidArgumentError: The recorder is not attached to a run.
        """
        if self._persist is None:
            raise InvalidArgumentError(f"{self!r} is attached to no run; nothing can persist it")
        self._persist(event)

    def selects(self, key: str) -> bool:
        """Whether the recorder holds ``key``."""
        selected = self._selected.get(key)
        if selected is None:
            selected = self._selected[key] = any(
                fnmatch.fnmatchcase(key, pattern) for pattern in self.patterns
            )
        return selected

    def reserve(self, sizes: dict[str, int]) -> None:
        """Count keys whose bytes per step are known now against the budget (see
        :meth:`FlightRing.reserve`); raises ``FlightBudgetError`` before allocating."""
        self.ring.reserve(sizes)

    def observe(
        self, step: int, epoch: int | None, time: float, key: str, value: Any
    ) -> FlightEvent | None:
        """Hold ``value`` as ``key``'s at ``step`` (a selected key's array or tensor).

        From the step of a firing through the ``after`` steps after it the value is not
        held: the run records it raw. A value of another shape or dtype than the key's
        first, or at a step below its newest, is not held either (one ``RuntimeWarning``
        per key). Returns the event when the value fires the trigger (``on_nan`` of this
        key).

        Raises:
            FlightBudgetError: The key's first value would take the ring past its budget.
        """
        if step > self._step:
            self._step = step
        if not self._fired <= step <= self._until:
            try:
                self.ring.put(key, step, epoch, time, value)
            except (InvalidValueError, StepOrderError) as exc:
                if key not in self._skipped:
                    self._skipped.add(key)
                    warnings.warn(f"stepstore: {exc}; not held", RuntimeWarning, stacklevel=3)
        if key in self.trigger_keys:
            return self.check(step, {key: value})
        return None

    def check(self, step: int, values: Mapping[str, Any]) -> FlightEvent | None:
        """Show the trigger the values logged at ``step``; the event if it fires.

        The trigger sees every value; it does not fire again from the step of the last
        event through the ``after`` steps after it.
        """
        if step > self._step:
            self._step = step
        fire = self._fire
        if fire is None:
            return None
        for key in self.trigger_keys:
            if key in values:
                self._seen.add(key)
        fired = fire(values, None)
        if fired is None or self._fired <= step <= self._until:
            return None
        return FlightEvent(repr(self.trigger), step, fired[0], f"{fired[1]} at step {step}")

    def exception(self, error: BaseException) -> FlightEvent | None:
        """The event when the trigger fires on an exception ending the training."""
        if self._fire is None:
            return None
        fired = self._fire({}, error)
        if fired is None:
            return None
        return FlightEvent(repr(self.trigger), max(self._step, 0), fired[0], fired[1])

    def event(self, reason: str) -> FlightEvent:
        """An event for an explicit dump (``run.dump_flight(reason)``) at the newest step."""
        return FlightEvent(DUMP, max(self._step, 0), None, reason)

    def dump(self, event: FlightEvent | str) -> tuple[FlightEvent, dict[str, FlightSeries]]:
        """Empty the ring for ``event`` (or an explicit dump with this reason).

        Returns the event and the held steps per key, oldest first; the selected keys'
        next ``after`` steps are then to be recorded raw (:meth:`recording_after`).
        """
        if isinstance(event, str):
            event = self.event(event)
        self._fired, self._until = event.step, event.step + self.after
        return event, self.ring.drain()

    def recording_after(self, key: str, step: int) -> bool:
        """Whether ``key`` at ``step`` is to be recorded raw: a selected key from the step of
        the last event through the ``after`` steps after it (the ring holds none of them)."""
        return self._fired <= step <= self._until and self.selects(key)

    def unseen_triggers(self) -> list[str]:
        """The trigger's keys that no checked value had, sorted."""
        return sorted(self.trigger_keys - self._seen)

    def warn_unseen(self, run: str) -> None:
        """Warn (``RuntimeWarning``) of each trigger key never logged in ``run``."""
        for key in self.unseen_triggers():
            warnings.warn(
                f"stepstore: {run}: flight trigger {self.trigger!r} reads key {key!r}, which "
                "was never logged, so it never fired; log it or name a key that is logged",
                RuntimeWarning,
                stacklevel=4,
            )


def flight_writes(
    drained: Mapping[str, FlightSeries], recorded: Mapping[str, int] | None = None
) -> list[FlightWrite]:
    """The writes that persist a drained ring, step by step (keys in ring order within one).

    Args:
        drained: What :meth:`FlightRecorder.dump` returned.
        recorded: Each key's newest recorded step; steps at or below it are left out
            (a key's steps only go forward, and a step the key recorded is kept already).

    Returns:
        One :class:`FlightWrite` per held step of each key, ordered by step.
    """
    recorded = {} if recorded is None else recorded
    writes = []
    for order, (key, series) in enumerate(drained.items()):
        floor = recorded.get(key, -1)
        for index, step in enumerate(series.steps.tolist()):
            if step > floor:
                item = (key, step, series.epochs[index], float(series.times[index]))
                writes.append((step, order, FlightWrite(*item, series.values[index])))
    writes.sort(key=lambda entry: entry[:2])
    return [write for _, _, write in writes]
