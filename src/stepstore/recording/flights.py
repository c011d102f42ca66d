"""The flight recorders of one run: fed by ``log()``, kept when their trigger fires.

The run hands :class:`Flights` what keeping a ring needs (its key states, a callable that
records drained values raw, the store's ``add_event``) and calls it from ``log()`` (values
that passed), ``dump_flight``, an uncaught exception and ``finish``; the protocol between a
run and a :class:`~stepstore.flight.FlightRecorder` is described in ``stepstore.flight``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from ..backends.base import EventRow
from ..flight import FlightEvent, FlightRecorder, FlightWrite, flight_writes
from .keys import KeyState
from .messages import ArrayJob, TensorJob


class Flights:
    """The flight recorders attached to one run, and how their rings are kept.

    Args:
        states: The run's key states (read only: kinds and last recorded steps).
        record: Records writes into their keys' tensor series raw (capture policies
            bypassed), all of them or, when it raises, none.
        add_event: Stores an event row (``Backend.add_event``).
        run_id: The run the events belong to.
        rank: The rank recording them.
        label: The run as warnings name it (``run NAME (ID)``).
    """

    def __init__(
        self,
        states: Mapping[str, KeyState],
        record: Callable[[list[FlightWrite]], None],
        add_event: Callable[[EventRow], None],
        run_id: str,
        rank: int,
        label: str,
    ) -> None:
        self._states = states
        self._record = record
        self._add_event = add_event
        self._run_id = run_id
        self._rank = rank
        self._label = label
        # each recorder, and whether log() feeds it (watch() hooks feed their own)
        self._recorders: list[tuple[FlightRecorder, bool]] = []

    def add(self, recorder: FlightRecorder, fed: bool) -> Callable[[FlightEvent], None]:
        """Keep ``recorder`` (``log()`` observes its keys when ``fed``, checks its trigger
        always); returns the callable that persists one of its events."""
        self._recorders = [*self._recorders, (recorder, fed)]
        return partial(self.persist, recorder)

    def recording_after(self, key: str, step: int) -> bool:
        """Whether a recorder records ``key`` at ``step`` raw (after a firing)."""
        return any(recorder.recording_after(key, step) for recorder, _ in self._recorders)

    def observe(
        self,
        values: Mapping[str, Any],
        step: int,
        epoch: int | None,
        stamp: float,
        arrays: Sequence[ArrayJob],
    ) -> None:
        """Feed a ``log()`` call whose values all passed to the recorders, and keep a ring
        that fires before the call's own ``arrays`` are queued (so a key's steps go
        forward; the ring leaves out the keys ``arrays`` records at ``step``)."""
        states = self._states
        for recorder, fed in self._recorders:
            event = None
            if fed:
                for key, value in values.items():
                    if states[key].kind == "tensor" and recorder.selects(key):
                        event = recorder.observe(step, epoch, stamp, key, value) or event
            event = recorder.check(step, values) or event
            if event is not None:
                own = {job.key for job in arrays if isinstance(job, TensorJob)}
                self.persist(recorder, event, step, own)

    def persist(
        self,
        recorder: FlightRecorder,
        event: FlightEvent,
        step: int = -1,
        own: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """Drain ``recorder`` for ``event``: its steps go to the keys' tensor series, raw,
        at the steps, epochs and times they were taken (but the ``own`` keys at ``step``,
        which the calling ``log()`` records itself); then the event is stored."""
        event, drained = recorder.dump(event)
        states = self._states
        recorded = {key: states[key].last_step for key in drained if key in states}
        writes = [
            write
            for write in flight_writes(drained, recorded)
            if not (write.step == step and write.key in own)
        ]
        if writes:
            self._record(writes)
        self._add_event(
            EventRow(
                self._run_id,
                self._rank,
                event.step,
                time.time(),
                event.trigger,
                event.key,
                event.reason,
            )
        )

    def dump(self, reason: str) -> None:
        """Keep what every recorder holds now, with an event giving ``reason``."""
        for recorder, _ in self._recorders:
            self.persist(recorder, recorder.event(reason))

    def keep_on(self, error: BaseException) -> None:
        """An uncaught exception ends the training: keep the rings whose trigger fires on it
        (before the run is marked crashed); a failure to is a warning, not a new error."""
        for recorder, _ in self._recorders:
            try:
                event = recorder.exception(error)
                if event is not None:
                    self.persist(recorder, event)
            except Exception as exc:  # noqa: BLE001 - the training's own error comes first
                warnings.warn(
                    f"stepstore: {self._label}: could not keep the flight "
                    f"recorder {recorder!r} on {type(error).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def warn_unseen(self) -> None:
        """Warn of each recorder's trigger keys that were never logged (at ``finish``)."""
        for recorder, _ in self._recorders:
            recorder.warn_unseen(self._label)
