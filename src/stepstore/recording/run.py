"""Run: one training run being recorded, and its lifecycle.

Lifecycle: ``open`` (after ``stepstore.init``) -> ``finished`` / ``crashed`` /
``incomplete`` / ``failed`` (after ``finish``). The training thread only checks the capture
policy and appends to the journal; host scalars go no further on this thread. Data flows
one way: ``log()`` -> journal (host scalars) or the array writer's queue (tensors, images,
records, artifacts) -> the scalar writer (``writer.py``), which also takes the device
scalars and the scalars derived beside training -> the store. Tensors and images are
staged by the run's :class:`~.capture.Capture`; flight recorders (:meth:`Run.flight`,
``stepstore.flight``) are kept by its :class:`~.flights.Flights`, which copies selected
tensors into a ring on this thread and, when a trigger fires, has the run record the ring
raw and stores an event.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from abc import ABCMeta
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, overload

import numpy as np

from ..backends.base import RUN_STATUSES, Backend, RunRecord
from ..config import Config
from ..console import ProgressLine
from ..errors import (
    InvalidArgumentError,
    InvalidValueError,
    KindMismatchError,
    NotFoundError,
    RunStateError,
    WriterError,
)
from ..flight import FlightEvent, FlightRecorder, FlightWrite
from ..policies import Check, Policy
from ..series.chunk import NO_EPOCH
from ..system import SystemSampler
from ..tensors.flight import DEFAULT_FLIGHT_BUDGET
from ..tensors.images import Image
from ..tensors.reduce import Reduction
from ..tensors.staging import is_array
from ..trees import flatten
from ..values import DEFER, merged_params, plain_params, record_json, to_scalar
from . import hooks
from .arguments import (
    MAX_STEP,
    check_count,
    check_key,
    open_artifact,
    step_order_error,
    wall_time,
)
from .arrays import ArrayWriter
from .capture import Budget, Capture
from .flights import Flights
from .journal import Journal
from .keys import KeyRegistry, KeyState
from .live import History, LiveReader
from .messages import (
    ArrayJob,
    DerivedScalar,
    DeviceValue,
    RecordJob,
)
from .resume import restore
from .sink import ScalarSink
from .writer import Cursor, DerivedScalars, ScalarWriter

_OPEN, _FINISHED, _FORKED = "open", "finished", "forked"
#: The clock of ``log()``'s wall times (a module name: ``log`` has a ``time`` argument).
_now = time.time


def _check_values(values: Any) -> None:
    if not isinstance(values, Mapping):
        raise InvalidArgumentError(
            f"values={values!r:.80}: expected a dict of key to value, e.g. {{'loss': 0.5}}"
        )


def _device_value(
    seq: int, state: KeyState, step: int, epoch: int, stamp: float, value: Any
) -> DeviceValue:
    """A device scalar logged after journal record ``seq``, for the writer to read (a torch
    tensor taken off the autograd graph)."""
    device = value.detach() if hasattr(value, "detach") else value
    return DeviceValue(2 * seq + 1, state.id, step, epoch, stamp, device)


def _kind_of(value: Any) -> str:
    if isinstance(value, Image) or (
        isinstance(value, (list, tuple)) and value and all(isinstance(v, Image) for v in value)
    ):
        return "image"
    return "tensor" if is_array(value) else "scalar"


class Run(metaclass=ABCMeta):  # noqa: B024 - an ABC only to register IdleRun
    """A training run being recorded; create it with :func:`stepstore.init`.

    ``isinstance(run, Run)`` also holds for the :class:`~.idle.IdleRun` that non-zero ranks
    get (registered as a virtual subclass: it shares the interface, not the state).
    """

    def __init__(
        self,
        backend: Backend,
        record: RunRecord,
        config: Config,
        *,
        allow_rewind: bool = False,
        resumed: bool = False,
        rank: int = 0,
        journal_seq: int | None = None,
    ) -> None:
        self._backend = backend
        self._record = record
        self._config = config
        self._allow_rewind = allow_rewind
        self._rank = rank
        self._keys = KeyRegistry()
        self._key_names = self._keys.states.keys()  # a live view
        self._capture = Capture(self._keys, lambda: self._arrays().pool)
        self._step = 0
        self._epoch: int | None = None
        self._lock = threading.RLock()
        self._array_writer: ArrayWriter | None = None
        self._progress: ProgressLine | None = None
        self._system: SystemSampler | None = None
        self._flights: Flights | None = None  # made by the first flight recorder
        if resumed:
            self._step, self._epoch = restore(backend, record, rank, self._keys)
        committed = record.journal_seq if journal_seq is None else journal_seq
        self._cursor = Cursor(committed)
        self._seq = committed
        self._journal = Journal.for_run(
            backend.journal_dir, record.id, record.name, config.journal_slots, rank
        )
        self._keys.attach(self._journal)
        self._layout = self._journal.layout()
        self._half = self._layout.capacity // 2
        sink = ScalarSink(backend, record.id, config.chunk_size, rank)
        self._writer = ScalarWriter(
            sink,
            self._journal,
            self._cursor,
            self._keys.names,
            config.flush_interval,
            self._writer_fields,
        )
        self._derived = DerivedScalars(self._keys, self._writer)
        self._live = LiveReader(backend, record.id, rank, self._journal, self._writer)
        self._writer.start()
        self._state = _OPEN
        hooks.track(self)

    # -- identity -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The run's unique id."""
        return self._record.id

    @property
    def name(self) -> str:
        """The run's name (given or generated)."""
        return self._record.name

    @property
    def project(self) -> str:
        """The project the run belongs to."""
        return self._record.project

    @property
    def params(self) -> dict[str, Any]:
        """The run's hyper-parameters: those given to ``init`` and :meth:`update_params`."""
        return self._record.params

    @property
    def tags(self) -> list[str]:
        """The run's tags."""
        return list(self._record.tags)

    @property
    def store(self) -> str:
        """The store the run writes to."""
        return self._backend.uri

    @property
    def rank(self) -> int:
        """The rank this process records as (0 outside distributed jobs)."""
        return self._rank

    @property
    def step(self) -> int:
        """The step the next ``log()`` without ``step=`` records at (with ``advance=False``,
        the one before)."""
        return self._step

    @property
    def status(self) -> str:
        """``running`` while open, then the status given to ``finish``."""
        return self._record.status

    def __repr__(self) -> str:
        rank = f" rank={self._rank}" if self._rank else ""
        return (
            f"<Run {self.name} id={self.id}{rank} project={self.project!r} {self._record.status}>"
        )

    # -- recording ----------------------------------------------------------------------

    def log(
        self,
        values: Mapping[str, Any],
        step: int | None = None,
        epoch: int | None = None,
        when: Policy | None = None,
        advance: bool = True,
        *,
        repeat: bool = False,
        time: float | None = None,
    ) -> None:
        """Record values at a step.

        Args:
            values: Key to value: Python/NumPy numbers or 0-d framework tensors (scalars),
                arrays and tensors, ``Image``s; nested dicts, lists and tuples (pytrees)
                record one key per leaf, ``params/dense/kernel``.
            step: The iteration; when omitted, one more than the last step given to this run
                (0 for the first call). Each key's steps only go forward.
            epoch: The epoch the step belongs to; when omitted, the last epoch given (on a
                resumed run, the last epoch recorded before).
            when: A capture policy for this call, overriding the keys' bound policies.
            advance: Whether the call moves the run's step on. ``advance=False`` without
                ``step`` records at the run's last step (``run.step - 1``, the step of the
                last call that moved it on; 0 before any) and leaves the step there: how
                per-epoch values join the epoch's last training step. With an explicit
                ``step`` it only leaves the run's step where it is (integrations recording
                beside the training loop pass it).
            repeat: Let a key take another value at its last step (a key takes one value per
                step otherwise; integrations recording every forward of a step pass True).
            time: The wall time of the values, Unix seconds (stored to the microsecond);
                the current time when omitted. Importers pass the time a value was first
                recorded.

        Host numbers survive the death of the process once this returns; device scalars
        are resolved by the writer, never on this thread. Raises ``InvalidValueError``,
        ``StepOrderError``, ``KindMismatchError`` or ``RunStateError``; a call that raises
        records none of its values.
        """
        if (
            self._state is not _OPEN
            or self._writer.error is not None
            or (self._array_writer is not None and self._array_writer.error is not None)
        ):
            self._check_writable()
        if type(values) is not dict:
            _check_values(values)
        if not self._key_names >= values.keys():  # a new key: maybe a nested one
            values = flatten(values)
        # the run's step and epoch move on only once the call has succeeded
        if step is None and advance:
            step = self._step
            if step > MAX_STEP:
                self._steps_exhausted()
            next_step = step + 1
        else:
            step, next_step = self._given_step(step, advance)
        if epoch is None:
            epoch = self._epoch
        elif epoch is not self._epoch:
            epoch = check_count("epoch", epoch)
        self._record_values(values, step, epoch, when, repeat, time)
        self._step, self._epoch = next_step, epoch

    def _check_writable(self) -> None:
        """Raise unless the run is open; a failed writer raises or (``on_error="warn"``)
        warns."""
        self._require_open()
        if self._writer.error is not None:
            self._writer_failed(self._writer)
        if self._array_writer is not None and self._array_writer.error is not None:
            self._writer_failed(self._array_writer)

    def _given_step(self, step: int | None, advance: bool) -> tuple[int, int]:
        """``log()``'s step and the run's next step, for a given ``step`` or
        ``advance=False``."""
        next_step = self._step
        if step is None:  # advance=False: the last step, where the run stays
            return max(next_step - 1, 0), next_step
        if type(step) is not int or not 0 <= step <= MAX_STEP:
            step = check_count("step", step)
        return step, (step + 1 if step >= next_step and advance else next_step)

    def _record_values(
        self,
        values: Mapping[str, Any],
        step: int,
        epoch: int | None,
        when: Policy | None,
        repeat: bool,
        time: float | None,
    ) -> None:
        """Journal the host scalars among ``values`` that their policies accept, queue the
        others (device scalars to the writer, arrays and images to the array writer), feed
        the flight recorders, then move the keys on. A call that raises leaves no records,
        no jobs and the keys as they were.
        """
        registry = self._keys
        keys = registry.states
        check_for = None if when is None else registry.compile_when(when)[0]
        seq = self._seq
        if seq + len(values) - self._cursor.committed > self._half:
            self._make_room(len(values))
        stamp = _now() if time is None else wall_time(time)
        pack, buffer, base, size, capacity = self._layout
        stored_epoch = NO_EPOCH if epoch is None else epoch
        accepted: list[tuple[KeyState, Any]] = []
        arrays: list[ArrayJob] | None = None
        deferred: list[DeviceValue] | None = None
        latest_before = None
        try:
            if registry.triggers:
                latest_before = dict(registry.latest)
                registry.update_latest(values)
            for key, value in values.items():
                state = keys.get(key)
                if state is None:
                    state = self._new_key(key, value)
                if (
                    step <= state.last_step
                    and not self._allow_rewind
                    and not (repeat and step == state.last_step)
                ):
                    step_order_error(key, step, state.last_step)
                check = state.check if check_for is None else check_for
                if check is not None and self._rejects(check, state, step, epoch):
                    continue
                if state.kind != "scalar":
                    if arrays is None:
                        arrays = []
                    arrays.append(self._capture.job(state, value, step, stored_epoch, stamp))
                    accepted.append((state, None))
                    continue
                if type(value) is not float:
                    converted = to_scalar(key, value)
                    if converted is DEFER:
                        if deferred is None:
                            deferred = []
                        deferred.append(_device_value(seq, state, step, stored_epoch, stamp, value))
                        accepted.append((state, deferred[-1].value))
                        continue
                    value = converted
                seq += 1
                at = base + (seq % capacity) * size
                pack(buffer, at, state.id, 0, step, stored_epoch, stamp, value, seq)
                accepted.append((state, value))
            if self._flights is not None:
                self._flights.observe(values, step, epoch, stamp, arrays or ())
            if deferred is not None or arrays is not None:
                self._dispatch(deferred or [], arrays or [])
        except BaseException:  # a call that raises records none of its values
            self._undo(seq, latest_before)
            raise
        # all passed: the keys move on and the writer may take the records
        for state, value in accepted:
            state.value = value
            state.last_step = step
            state.last_epoch = epoch
            state.count += 1
        if registry.triggers:  # a policy compares with the trigger values of its last point
            triggers = None if when is None else registry.compile_when(when)[1]
            registry.keep_refs([state for state, _ in accepted], triggers)
        self._seq = self._cursor.written = seq

    def _undo(self, seq: int, latest_before: dict[str, float] | None) -> None:
        """A ``log()`` call raised: void the journal records it wrote (through ``seq``) and
        give the trigger keys back their values from before it."""
        if seq > self._seq:
            self._journal.discard(self._seq + 1, seq + 1)
        if latest_before is not None:  # in place: compiled policies hold this dict
            self._keys.latest.clear()
            self._keys.latest.update(latest_before)

    def _make_room(self, count: int) -> None:
        """Before journaling ``count`` records: wait while the journal has no room for
        them, or ask for a flush once it is half full."""
        committed = self._cursor.committed
        if self._seq + count - committed > self._layout.capacity:
            self._writer.wait_for_space(count)
        elif self._seq - committed > self._half:
            self._writer.wake()

    def _rejects(self, check: Check, state: KeyState, step: int, epoch: int | None) -> bool:
        """Whether the policy ``check`` skips ``state``'s key at ``step`` (counted), unless
        a flight recorder records it raw there."""
        if check(step, epoch, state) or (
            self._flights is not None and self._flights.recording_after(state.key, step)
        ):
            return False
        state.rejected += 1
        return True

    def _dispatch(self, deferred: list[DeviceValue], arrays: list[ArrayJob]) -> None:
        """Queue a call's device scalars for the writer and its arrays and images for the
        array writer: both or, when one raises, neither."""
        if deferred:
            self._writer.defer(deferred)  # waits for room; raises before queuing any
        if arrays:
            try:
                self._submit(arrays)
            except BaseException:
                if deferred:
                    self._writer.withdraw(deferred)
                raise

    def _new_key(self, key: str, value: Any, kind: str | None = None) -> KeyState:
        """Register a key first logged with ``value`` (its kind is the value's unless
        given); a scalar key's first value must be valid before the key is registered."""
        check_key(key)
        if kind is None:
            kind = _kind_of(value)
        if kind == "scalar":
            to_scalar(key, value)
        return self._keys.add(key, kind)

    def update_params(self, params: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Add or change hyper-parameters after ``init`` (a learning rate found by a
        finder, a config the framework settles late).

        ``run.update_params({"lr": 0.1})`` or ``run.update_params(lr=0.1)``: merged into
        :attr:`params` (nested dicts merged key by key, later values win), stored with the
        run at once and visible to ``RunView.params`` and to filters (``params.lr > 0.05``).
        Values follow ``init``'s rules; raises ``InvalidArgumentError`` naming a value that
        cannot be stored, and then changes nothing.
        """
        self._require_open()
        if params is not None and not isinstance(params, Mapping):
            raise InvalidArgumentError(f"params={params!r:.60}: expected a dict or None")
        given = plain_params({**(params or {}), **more})
        merged = merged_params(self._record.params, given)
        self._backend.update_params(self.id, merged)
        self._record.params = merged

    # -- live reads -----------------------------------------------------------------------

    def latest(self, key: str) -> float:
        """The last value this run recorded under scalar ``key`` (flushed or not), at once.

        A device scalar is read from its device by this call. Raises ``NotFoundError``
        for a key this run has not logged and ``KindMismatchError`` for one that does not
        hold scalars.
        """
        value = self._scalar_key(key).value
        if value is None:
            raise NotFoundError(f"key {key!r}: no value recorded yet in run {self.name}")
        return value if type(value) is float else float(value.item())

    @overload
    def history(
        self, key: str, last: int | None = None, *, with_steps: Literal[False] = False
    ) -> np.ndarray: ...

    @overload
    def history(
        self, key: str, last: int | None = None, *, with_steps: Literal[True]
    ) -> History: ...

    def history(
        self, key: str, last: int | None = None, *, with_steps: bool = False
    ) -> np.ndarray | History:
        """The values this run recorded under scalar ``key``, oldest first, including
        points not flushed yet, without waiting for the writer (for early stopping, a
        schedule on plateaus, printing).

        Args:
            key: A scalar key this run logged.
            last: Only the last this many points (read from the pending points and as few
                stored chunks as hold the rest); all of them when None.
            with_steps: Return a :class:`~stepstore.recording.live.History` of ``step``,
                ``epoch`` (-1 where none was given) and ``value`` arrays instead of the
                values alone.

        Returns a float64 array (or a ``History``). Raises ``NotFoundError`` for a key
        this run has not logged, ``KindMismatchError`` for one that does not hold scalars,
        ``InvalidArgumentError`` for a ``last`` that is not a positive integer.
        """
        state = self._scalar_key(key)
        if last is not None:
            last = check_count("last", last)
            if last == 0:
                raise InvalidArgumentError("last=0: expected a positive number of points or None")
        points = self._live.history(state, last)
        return points if with_steps else points.value

    def _scalar_key(self, key: str) -> KeyState:
        state = self._keys.states.get(key) if isinstance(key, str) else None
        if state is None:
            raise NotFoundError(
                f"key {key!r}: not logged in run {self.name} ({self.id}); it has "
                f"{len(self._keys.states)} keys"
            )
        if state.kind != "scalar":
            raise KindMismatchError(
                f"key {key!r} holds {state.kind} values; latest() and history() read scalar keys"
            )
        return state

    # -- tensors, images, records, artifacts ----------------------------------------------

    def _arrays(self) -> ArrayWriter:
        if self._array_writer is None:
            with self._lock:
                if self._array_writer is None:
                    self._array_writer = ArrayWriter(
                        self._backend,
                        self.id,
                        self._backend.array_location(self._record.array_store),
                        self._config.flush_interval,
                        self._config.tensor_queue_bytes,
                        self._config.fsync,
                        self._derived,
                        self._rank,
                    )
        return self._array_writer

    def _submit(self, jobs: list[ArrayJob]) -> None:
        """Queue jobs for the array writer."""
        writer = self._arrays()
        if writer.error is not None:
            self._writer_failed(writer)
        writer.submit(jobs)

    def reduce(
        self,
        pattern: str,
        how: str | None = None,
        *,
        dtype: str | None = None,
        sample: int | None = None,
        bins: int = 64,
    ) -> Run:
        """Record the tensors of keys matching ``pattern`` in a cheaper form (later wins).

        Args:
            pattern: Key glob, e.g. ``"activations/*"``.
            how: ``None``/``"raw"`` keeps tensors; ``"stats"`` keeps the scalar series
                ``KEY/mean|std|min|max|norm|zeros``; ``"histogram"`` keeps
                ``KEY/histogram`` counts and ``KEY/histogram_edges``.
            dtype: ``"float16"`` stores floating tensors at half precision (lossy).
            sample: Keep only this many elements, chosen once; their flat indices are the
                tensor ``KEY/sample_index``.
            bins: Histogram bins.
        """
        self._require_open()
        if not isinstance(pattern, str) or not pattern:
            raise InvalidArgumentError(f"pattern={pattern!r}: expected a non-empty glob string")
        self._capture.reductions.append((pattern, Reduction(how, dtype, sample, bins)))
        return self

    def budget(self, nbytes: int, keys: str = "*") -> Run:
        """Cap the bytes recorded for tensors and images of keys matching ``keys``.

        Once the group has used its budget, its keys are thinned to log-spaced steps
        (0, 1, 2, 4, 8, ...); a warning says so and the run's capture metadata records when.
        """
        self._require_open()
        nbytes = check_count("bytes", nbytes)
        if not isinstance(keys, str) or not keys:
            raise InvalidArgumentError(f"keys={keys!r}: expected a non-empty glob string")
        self._capture.budgets.append(Budget(keys, nbytes))
        return self

    def log_record(
        self,
        key: str,
        record: Mapping[str, Any],
        step: int | None = None,
        epoch: int | None = None,
        *,
        time: float | None = None,
    ) -> None:
        """Store a JSON record (any dict of JSON-like values) under ``key`` at a step.

        ``step``, ``epoch`` and ``time`` default as in :meth:`log`. Records are durable within the
        flush interval and read back with ``RunView.records(key)``. Field names must be
        strings (``step`` is taken by the step column); tuples and sets are stored as
        lists, NumPy/torch values as their ``tolist()``; NaN and infinities are kept.
        Raises ``InvalidValueError`` naming the field that cannot be stored; a call that
        raises stores nothing and leaves the run's step where it was.
        """
        self._require_open()
        if not isinstance(record, Mapping):
            raise InvalidValueError(f"key {key!r}: record {record!r:.60} is not a dict")
        state = self._keys.states.get(key) if isinstance(key, str) else None
        if state is None:
            check_key(key)
        elif state.kind != "record":
            raise KindMismatchError(f"key {key!r} holds {state.kind} values; got a record")
        data = record_json(key, record)
        stamp = wall_time(time)
        if step is not None:
            step = check_count("step", step)
        if epoch is not None:
            epoch = check_count("epoch", epoch)
        if state is None:
            state = self._new_key(key, record, "record")
            if state.kind != "record":  # another thread registered the key meanwhile
                raise KindMismatchError(f"key {key!r} holds {state.kind} values; got a record")
        if step is None:
            if self._step > MAX_STEP:
                self._steps_exhausted()
            step = self._step
        if step <= state.last_step and not self._allow_rewind:
            step_order_error(key, step, state.last_step)
        epoch = self._epoch if epoch is None else epoch
        stored_epoch = NO_EPOCH if epoch is None else epoch
        # the run and the key move on once it is queued
        self._submit([RecordJob(key, step, stored_epoch, stamp, data, len(data))])
        state.last_step, state.count = step, state.count + 1
        self._step, self._epoch = max(self._step, step + 1), epoch

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Store a file (a checkpoint, a config) with the run; returns its name.

        The file is opened here and copied by the writer thread (with its size and
        SHA-256), so its content must not change until ``flush()`` or ``finish()`` returns;
        moving or deleting it meanwhile is fine.
        """
        self._require_open()
        job = open_artifact(path, name)
        try:
            self._submit([job])
        except BaseException:
            job.source.close()
            raise
        return job.key

    def policy(self, pattern: str, when: Policy) -> Run:
        """Bind a capture policy to the keys matching a glob pattern (later bindings win).

        Applies to keys already seen and to new ones; returns the run for chaining.
        """
        self._require_open()
        if not isinstance(pattern, str) or not pattern:
            raise InvalidArgumentError(f"pattern={pattern!r}: expected a non-empty glob string")
        if not isinstance(when, Policy):
            raise InvalidArgumentError(
                f"when={when!r}: expected a capture policy such as stepstore.every(10)"
            )
        self._keys.bind(pattern, when)
        return self

    # -- flight recording -----------------------------------------------------------------

    def flight(
        self,
        pattern: str | Sequence[str],
        steps: int,
        trigger: Policy | None = None,
        after: int = 0,
        budget: int = DEFAULT_FLIGHT_BUDGET,
        device: bool = False,
    ) -> FlightRecorder:
        """Hold the tensors logged under keys matching ``pattern`` for the last ``steps``
        steps, whatever their capture policy records, and keep them when ``trigger`` fires.

        Each ``log()`` copies the selected arrays and tensors into a preallocated ring (no
        I/O). When the trigger fires (``on_nan(key)``, ``on_change(key, rel=...)``,
        ``on_exception()`` or a combination; None for :meth:`dump_flight` only), the ring is
        stored as the keys' ordinary tensor series at the steps it holds (a step at or
        before one the key's own policy recorded is already stored), the next ``after``
        steps of the keys are recorded raw, and an event is stored with the run
        (``RunView.events()``).

        Args:
            pattern: A key glob (``"activations/*"``) or a list of them.
            steps: How many steps to hold (K >= 1).
            trigger: When to keep the ring.
            after: Steps after a firing recorded raw.
            budget: The most bytes the ring may hold; ``FlightBudgetError`` names the
                largest keys when a key's first value would pass it.
            device: Hold torch tensors in their device's memory until they are kept.

        Returns:
            The attached :class:`~stepstore.flight.FlightRecorder`.
        """
        self._require_open()
        recorder = FlightRecorder(pattern, steps, trigger, after, budget, device)
        recorder.attach(self, fed=True)
        return recorder

    def dump_flight(self, reason: str) -> None:
        """Keep what every flight recorder of the run holds now, as a trigger would, with an
        event (trigger ``dump_flight``) giving ``reason``."""
        self._require_open()
        if not isinstance(reason, str):
            raise InvalidArgumentError(f"reason={reason!r}: expected a string saying why")
        if self._flights is not None:
            self._flights.dump(reason)

    def _add_flight(self, recorder: FlightRecorder, fed: bool) -> Callable[[FlightEvent], None]:
        """Keep ``recorder`` (``FlightRecorder.attach``); returns the callable that
        persists one of its events."""
        self._require_open()
        if self._flights is None:
            label = f"run {self.name} ({self.id})"
            self._flights = Flights(
                self._keys.states,
                self._record_raw,
                self._backend.add_event,
                self.id,
                self._rank,
                label,
            )
        return self._flights.add(recorder, fed)

    def _record_raw(self, writes: list[FlightWrite]) -> None:
        """Record a drained flight ring into its keys' tensor series at the steps, epochs
        (None: the run's current one) and times it held, whatever the keys' policies."""
        states = self._keys.states
        jobs: list[ArrayJob] = []
        kept: list[tuple[KeyState, int, int | None]] = []
        for write in writes:
            state = states.get(write.key) or self._new_key(write.key, write.value, "tensor")
            epoch = self._epoch if write.epoch is None else write.epoch
            stored_epoch = NO_EPOCH if epoch is None else epoch
            jobs.append(self._capture.job(state, write.value, write.step, stored_epoch, write.time))
            kept.append((state, write.step, epoch))
        self._submit(jobs)
        for state, written, epoch in kept:
            state.last_step, state.last_epoch, state.count = written, epoch, state.count + 1

    # -- lifecycle ----------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state is not _OPEN:
            self._not_open()

    def _not_open(self) -> NoReturn:
        if self._state is _FORKED:
            raise RunStateError(
                f"run {self.name} ({self.id}) belongs to process {self._record.pid}; a forked "
                "child cannot record into it (init a run in the child instead)"
            )
        raise RunStateError(
            f"run {self.name} ({self.id}) is {self._record.status}; it cannot record any more "
            "(stepstore.init(..., resume=RUN_ID) continues it)"
        )

    def detach(self) -> None:
        """Stop recording without touching the store: this process is a fork of the one
        that records the run (called by the fork hook)."""
        self._state = _FORKED

    def _steps_exhausted(self) -> NoReturn:
        raise InvalidArgumentError(
            f"run {self.id}: its next automatic step {self._step} is past the largest step "
            f"{MAX_STEP} (steps are signed 64-bit integers)"
        )

    def _writer_failed(self, writer: ScalarWriter | ArrayWriter) -> None:
        error = writer.error
        if self._config.on_error == "warn":
            warnings.warn(
                f"stepstore writer for run {self.id}: {error}; points stay in the journal and "
                "will be retried",
                RuntimeWarning,
                stacklevel=3,
            )
            writer.error = None
            return
        raise WriterError(
            f"the writer of run {self.id} failed: {error}; logged points are kept in the "
            "journal and written when the store works again"
        ) from error

    def flush(self) -> None:
        """Block until everything logged so far is in the store."""
        self._require_open()
        if self._array_writer is not None:
            self._array_writer.flush()
        self._writer.flush()

    def console(self, keys: Sequence[str] | None = None, every: float = 0.5) -> Run:
        """Show a live progress line while the run trains (as Keras prints one): the epoch,
        step, steps per second and the latest values of ``keys`` (by default the first six
        scalar keys logged, leaving out ``system/``, ``activations/``, ``gradients/`` and
        ``weights/``), redrawn every ``every`` seconds, and a summary line per epoch. On a
        terminal it is a live line with ``print`` output shown above it; in other output
        only the epoch lines and a last line at :meth:`finish` are printed. Drawn on a
        thread of its own: ``log()`` costs the same with it on. Calling it again replaces it.
        """
        self._require_open()
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys or ()):
            raise InvalidArgumentError(f"keys={keys!r}: expected a list of key names or None")
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0:
            raise InvalidArgumentError(f"every={every!r}: expected seconds between redraws (> 0)")
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
            self._progress = ProgressLine(
                self.name,
                self._journal,
                lambda: self._cursor.written,
                self._keys.names,
                self._writer.resolved,
                keys,
                float(every),
            )
        return self

    def _sample_system(self, interval: float) -> None:
        """Start sampling system metrics under ``system/`` every ``interval`` seconds (for
        ``init(system=...)``)."""
        done = [s.last_step for k, s in self._keys.states.items() if k.startswith("system/")]
        put = self._derived.put
        self._system = SystemSampler(
            lambda key, step, stamp, value: put(DerivedScalar(key, step, NO_EPOCH, stamp, value)),
            interval,
            first_step=max(done, default=-1) + 1,
            path=str(self._backend.journal_dir or Path.cwd()),
        )

    def capture_info(self) -> dict[str, Any]:
        """Which policy governs each stored key and how many points it kept and skipped.

        ``keys`` lists the keys as stored, so each ``recorded`` is the count of its series.
        A tensor key reduced to statistics or a histogram (:meth:`reduce`) is stored as its
        outputs (``KEY/mean``, ..., ``KEY/histogram``, ``KEY/histogram_edges``): they stand
        in its place, each with the policy and skipped points of that key (``from``).
        """
        return self._capture.info()

    def writer_info(self) -> dict[str, Any]:
        """Writer counters: flushes, points written, and how often ``log`` had to wait."""
        w, a = self._writer, self._array_writer
        return {
            "flushes": w.flushes,
            "points": w.points,
            "waits": w.waits + (a.waits if a else 0),
            "wait_seconds": round(w.wait_seconds + (a.wait_seconds if a else 0.0), 6),
            "array_bytes": a.bytes_written if a else 0,
            "flush_interval": self._config.flush_interval,
        }

    def _writer_fields(self) -> dict[str, Any]:
        """Run fields each flush refreshes; a non-zero rank's row keeps only its position."""
        if self._rank:
            return {}
        return {"capture": self.capture_info(), "writer": self.writer_info()}

    def finish(self, status: str = "finished") -> None:
        """Flush everything, record the final status and close the run.

        Calling it again does nothing. If the last flush fails the journal is kept, the
        error is raised, and the next process opening the store recovers the points.
        """
        if self._state is not _OPEN:
            return
        if status not in RUN_STATUSES or status == "running":
            raise InvalidArgumentError(
                f"status={status!r}: expected one of "
                f"{', '.join(s for s in RUN_STATUSES if s != 'running')}"
            )
        self._state = _FINISHED
        hooks.untrack(self)
        try:
            if self._system is not None:
                self._system.stop()
            if self._array_writer is not None:
                self._array_writer.stop()
            self._writer.stop()
        except BaseException as exc:
            self._record.status = "crashed"
            self._journal.close(remove=False)
            raise WriterError(
                f"run {self.id}: final flush failed ({exc}); the journal "
                f"{self._journal.path} keeps the points for recovery"
            ) from exc
        finally:
            if self._progress is not None:
                self._progress.stop()
        self._record.status = status
        fields = {"status": status, "ended": time.time(), "heartbeat": time.time()}
        self._backend.commit(self.id, [], [], {**fields, **self._writer_fields()}, self._rank)
        self._journal.close(remove=True)
        self._backend.close()  # the last connection to close checkpoints SQLite's WAL
        self._keys.warn_unseen(f"run {self.name} ({self.id})")
        if self._flights is not None:
            self._flights.warn_unseen()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> None:
        if error is not None and self._state is _OPEN and self._flights is not None:
            self._flights.keep_on(error)
        self.finish("finished" if kind is None else "crashed")

    def _crashed(self, error: BaseException) -> None:
        """An uncaught exception ends the program (the excepthook): keep the flight
        recorders that fire on it; the hook then finishes the run."""
        if self._state is _OPEN and self._flights is not None:
            self._flights.keep_on(error)
