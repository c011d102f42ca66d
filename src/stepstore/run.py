"""Run: one training run being recorded.

Lifecycle: ``open`` (after ``stepstore.init``) -> ``finished`` / ``crashed`` /
``incomplete`` / ``failed`` (after ``finish``). The training thread only checks the capture
policy and appends to the journal; see ``writer.py`` for the rest.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - see _register_atexit below
import contextlib
import fnmatch
import hashlib
import os
import secrets
import signal
import socket
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .backends import open_backend
from .backends.base import RUN_STATUSES, Backend, RankRecord, RunRecord, SeriesRecord
from .config import Config, load_config
from .console import ProgressLine
from .distributed import rank_and_world, shared_run_id
from .environment import describe
from .errors import (
    InvalidArgumentError,
    InvalidValueError,
    KindMismatchError,
    NotFoundError,
    RunStateError,
    StepOrderError,
    StoreError,
    WriterError,
)
from .journal import RECORD, Journal, is_held, journal_name
from .policies import Check, KeyState, Policy, log_spaced
from .recovery import recover_orphans
from .series.chunk import NO_EPOCH, decode
from .system import SystemSampler, check_interval
from .tensors.images import Image
from .tensors.location import ArrayLocation
from .tensors.reduce import STAT_NAMES, Reduction
from .tensors.staging import is_array, stage
from .tensors.writer import ArrayWriter, record_json
from .trees import flatten
from .values import DEFER, plain_record, require_unicode, to_scalar
from .writer import Cursor, SeriesSink, Writer

_OPEN, _FINISHED, _FORKED = "open", "finished", "forked"
_MAX_STEP = 2**63 - 1
#: Wall times stop here (stored as int64 microseconds; about the year 33658).
_MAX_TIME = 1e12
#: The clock of ``log()``'s wall times (a module name: ``log`` has a ``time`` argument).
_now = time.time
_MAX_KEY = 1024
_MAX_ARTIFACT_NAME = 255
_live_runs: weakref.WeakSet[Run] = weakref.WeakSet()
_RAW = Reduction()

_ADJECTIVES = (
    "amber",
    "brisk",
    "calm",
    "dapper",
    "eager",
    "fuzzy",
    "gentle",
    "hardy",
    "ivory",
    "jolly",
    "keen",
    "lucid",
    "mellow",
    "nimble",
    "olive",
    "proud",
    "quiet",
    "rapid",
    "sunny",
    "tidy",
    "vivid",
    "witty",
    "young",
    "zesty",
)
_NOUNS = (
    "otter",
    "falcon",
    "maple",
    "comet",
    "harbor",
    "lynx",
    "meadow",
    "nova",
    "orchid",
    "pebble",
    "quartz",
    "raven",
    "summit",
    "tundra",
    "willow",
    "zephyr",
    "badger",
    "cedar",
)


def new_name(run_id: str) -> str:
    pick = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:4], "big")
    return (
        f"{_ADJECTIVES[pick % len(_ADJECTIVES)]}-{_NOUNS[pick // 97 % len(_NOUNS)]}-{run_id[-4:]}"
    )


def _check_name(what: str, name: Any, maximum: int, error: type[Exception]) -> str:
    """``name`` if it is a non-empty, trimmed, printable UTF-8 string of at most
    ``maximum`` characters; else ``error`` naming ``what``."""
    if not isinstance(name, str):
        raise error(f"{what} {name!r}: expected a string, got {type(name).__name__}")
    if not name or name != name.strip():
        raise error(
            f"{what} {name!r}: expected a non-empty name without leading or trailing whitespace"
        )
    if len(name) > maximum:
        raise error(f"{what} {name[:40]!r}...: longer than {maximum} characters")
    bad = [c for c in name if ord(c) < 32 or ord(c) == 127]
    if bad:
        raise error(f"{what} {name!r}: contains control character {bad[0]!r}")
    require_unicode(name, f"{what} {name!r}", "a name that encodes as UTF-8")
    return name


def _check_key(key: Any) -> str:
    return _check_name("key", key, _MAX_KEY, InvalidValueError)


def _check_artifact_name(name: Any) -> str:
    _check_name("artifact name", name, _MAX_ARTIFACT_NAME, InvalidArgumentError)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise InvalidArgumentError(
            f"artifact name {name!r}: expected a file name, without '/' or '\\' and not '.' or '..'"
        )
    return name


def _step_order_error(key: str, step: int, last: int) -> NoReturn:
    relation = "at" if step == last else "below"
    raise StepOrderError(
        f"key {key!r}: step {step} is {relation} its last recorded step {last}; a key takes "
        "one value per step and its steps only go forward (init(..., allow_rewind=True) "
        "allows it)"
    )


def _kind_of(value: Any) -> str:
    if isinstance(value, Image) or (
        isinstance(value, (list, tuple)) and value and all(isinstance(v, Image) for v in value)
    ):
        return "image"
    return "tensor" if is_array(value) else "scalar"


#: The series a tensor key reduced with ``reduce(..., how)`` is stored as, by suffix.
_REDUCED_OUTPUTS = {"stats": STAT_NAMES, "histogram": ("histogram", "histogram_edges")}


def _capture_entry(state: KeyState, recorded: int, skipped: int) -> dict[str, Any]:
    """A key's line of the capture metadata."""
    policy = None if state.policy is None else repr(state.policy)
    return {"policy": policy, "recorded": recorded, "skipped": skipped}


def _check_count(name: str, value: Any, maximum: int = _MAX_STEP) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InvalidArgumentError(
            f"{name}={value!r}: expected a non-negative integer, got {type(value).__name__}"
        )
    number = value.__index__()
    if not 0 <= number <= maximum:
        raise InvalidArgumentError(f"{name}={number}: expected an integer in [0, {maximum}]")
    return number


def _wall_time(given: Any) -> float:
    """``given`` (Unix seconds) checked, or the current time when it is None."""
    if given is None:
        return time.time()
    if (
        isinstance(given, bool)
        or not isinstance(given, (int, float))
        or not (0 <= given < _MAX_TIME)
    ):
        raise InvalidArgumentError(
            f"time={given!r}: expected Unix seconds, a finite number in [0, {_MAX_TIME:.0f})"
        )
    return float(given)


class Run:
    """A training run being recorded; create it with :func:`stepstore.init`."""

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
        self._keys: dict[str, KeyState] = {}
        self._key_list: list[tuple[str, str]] = []
        self._bindings: list[tuple[str, Policy]] = []
        self._latest: dict[str, float] = {}
        self._triggers: tuple[str, ...] = ()
        self._when: dict[Policy, tuple[Check, tuple[str, ...]]] = {}
        self._step = 0
        self._epoch: int | None = None
        self._lock = threading.RLock()
        self._array_store = record.array_store or backend.default_array_store
        self._array_writer: ArrayWriter | None = None
        self._reductions: list[tuple[str, Reduction]] = []
        self._reduced: dict[str, str] = {}  # tensor key -> "stats"/"histogram" it was stored as
        self._budgets: list[dict[str, Any]] = []
        self._progress: ProgressLine | None = None
        self._system: SystemSampler | None = None
        if resumed:
            self._restore_keys()
        committed = record.journal_seq if journal_seq is None else journal_seq
        self._cursor = Cursor(committed)
        self._seq = committed
        try:
            self._journal = Journal.create(
                backend.journal_dir, record.id, config.journal_slots, rank
            )
        except FileExistsError:
            raise RunStateError(
                f"run {record.name} ({record.id}) rank {rank}: another process started "
                "recording it at the same moment; one process records a run at a time"
            ) from None
        except OSError as exc:  # a full disk, a read-only journal directory
            raise StoreError(
                f"run {record.name} ({record.id}): cannot create its journal in "
                f"{backend.journal_dir} ({exc})"
            ) from exc
        for key, state in self._keys.items():
            self._journal.add_key(state.id, key, state.kind)
        self._mm = self._journal.mm
        self._capacity = self._journal.capacity
        self._half = self._capacity // 2
        sink = SeriesSink(backend, record.id, config.chunk_size, rank)
        self._writer = Writer(
            sink,
            self._journal,
            self._cursor,
            self._key_list,
            config.flush_interval,
            self._writer_fields,
        )
        self._writer.start()
        self._state = _OPEN
        _live_runs.add(self)

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
        """The run's hyper-parameters as given to ``init``."""
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
        if self._state is not _OPEN:
            self._not_open()
        if self._writer.error is not None:
            self._writer_failed()
        if self._array_writer is not None and self._array_writer.error is not None:
            self._writer_failed(self._array_writer)
        if type(values) is not dict and not isinstance(values, Mapping):
            raise InvalidArgumentError(
                f"values={values!r:.80}: expected a dict of key to value, e.g. {{'loss': 0.5}}"
            )
        if not self._keys.keys() >= values.keys():  # a new key: maybe a nested one
            values = flatten(values)
        # the run's step and epoch move on only once the call has succeeded
        next_step = self._step
        if step is None:
            if not advance:
                step = max(next_step - 1, 0)
            else:
                step = next_step
                if step > _MAX_STEP:
                    self._steps_exhausted()
                next_step = step + 1
        else:
            if type(step) is not int or not 0 <= step <= _MAX_STEP:
                step = _check_count("step", step)
            if step >= next_step and advance:
                next_step = step + 1
        if epoch is None:
            epoch = self._epoch
        elif epoch is not self._epoch:
            epoch = _check_count("epoch", epoch)
        check_for, when_triggers = (None, None) if when is None else self._compile_when(when)
        latest_before = None
        cursor = self._cursor
        seq = self._seq
        if seq + len(values) - cursor.committed > self._capacity:
            self._writer.wait_for_space(len(values))
        elif seq - cursor.committed > self._half:
            self._writer.wake()
        keys = self._keys
        pack, mm, capacity = RECORD.pack_into, self._mm, self._capacity
        stamp = _now() if time is None else _wall_time(time)
        stored_epoch = NO_EPOCH if epoch is None else epoch
        accepted = []
        deferred = arrays = None
        try:
            if self._triggers:
                latest_before = dict(self._latest)
                self._update_latest(values)
            for key, value in values.items():
                state = keys.get(key)
                if state is None:
                    state = self._new_key(key, value)
                if (
                    step <= state.last_step
                    and not self._allow_rewind
                    and not (repeat and step == state.last_step)
                ):
                    _step_order_error(key, step, state.last_step)
                check = state.check if check_for is None else check_for
                if check is not None and not check(step, epoch, state):
                    state.rejected += 1
                    continue
                if state.kind != "scalar":
                    if arrays is None:
                        arrays = []
                    arrays.append(self._array_job(state, value, step, stored_epoch, stamp))
                    accepted.append(state)
                    continue
                if type(value) is not float:
                    converted = to_scalar(key, value)
                    if converted is DEFER:
                        if deferred is None:
                            deferred = []
                        device_value = value.detach() if hasattr(value, "detach") else value
                        deferred.append(
                            (2 * seq + 1, state.id, step, stored_epoch, stamp, device_value)
                        )
                        accepted.append(state)
                        continue
                    value = converted
                seq += 1
                pack(
                    mm,
                    4096 + (seq % capacity) * 48,
                    state.id,
                    0,
                    step,
                    stored_epoch,
                    stamp,
                    value,
                    seq,
                )
                accepted.append(state)
            if deferred:
                self._writer.defer(deferred)  # waits for room; raises before queuing any
            if arrays:
                try:
                    self._submit(arrays)
                except BaseException:
                    if deferred:
                        self._writer.withdraw(deferred)
                    raise
        except BaseException:  # a call that raises records none of its values
            if seq > self._seq:
                self._journal.discard(self._seq + 1, seq + 1)
            if latest_before is not None:  # in place: compiled policies hold this dict
                self._latest.clear()
                self._latest.update(latest_before)
            raise
        self._step, self._epoch = next_step, epoch
        for state in accepted:
            state.last_step = step
            state.last_epoch = epoch
            state.count += 1
            triggers = state.triggers if when_triggers is None else when_triggers
            if triggers:
                for trigger in triggers:
                    if trigger in self._latest:
                        state.refs[trigger] = self._latest[trigger]
        self._seq = cursor.written = seq

    def _new_key(self, key: str, value: Any, kind: str | None = None) -> KeyState:
        _check_key(key)
        if kind is None:
            kind = _kind_of(value)
        if kind == "scalar":
            to_scalar(key, value)  # a key's first value must be valid before it is registered
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                state = KeyState(len(self._key_list), key, kind)
                self._bind(state)
                self._journal.add_key(state.id, key, state.kind)
                self._key_list.append((key, state.kind))
                self._keys[key] = state
            return state

    # -- tensors, images, records, artifacts ----------------------------------------------

    def _arrays(self) -> ArrayWriter:
        if self._array_writer is None:
            with self._lock:
                if self._array_writer is None:
                    self._array_writer = ArrayWriter(
                        self._backend,
                        self.id,
                        ArrayLocation(self._array_store),
                        self._config.flush_interval,
                        self._config.tensor_queue_bytes,
                        self._config.fsync,
                        self._emit_scalar,
                        self._rank,
                    )
        return self._array_writer

    def _submit(self, jobs: list[tuple[tuple[Any, ...], int]]) -> None:
        """Queue array jobs (each with its size in bytes) for the array writer."""
        writer = self._arrays()
        if writer.error is not None:
            self._writer_failed(writer)
        writer.submit(jobs)

    def _array_job(
        self, state: KeyState, value: Any, step: int, epoch: int, stamp: float
    ) -> tuple[tuple[Any, ...], int]:
        """Stage a tensor or image value of ``state``'s key (the copy the caller pays for)."""
        key = state.key
        if state.kind == "tensor":
            if not is_array(value):
                raise KindMismatchError(
                    f"key {key!r} holds tensors; got {type(value).__name__} {value!r:.60} "
                    "(log scalars under their own key)"
                )
            reduction = self._reduction_for(key)
            if not reduction.raw:
                self._reduced[key] = str(reduction.how)
            staged = stage(key, value, self._arrays().pool)
            nbytes = staged.array.nbytes if hasattr(staged.array, "nbytes") else 0
            self._charge_budget(state, nbytes, step)
            return ("tensor", key, step, epoch, stamp, staged, reduction), nbytes
        images = value if isinstance(value, (list, tuple)) else [value]
        if not images or not all(isinstance(i, Image) for i in images):
            raise KindMismatchError(
                f"key {key!r} holds images; got {type(value).__name__} (expected "
                "stepstore.Image or a list of them)"
            )
        pixels = [(i.array, i.caption) for i in images]
        nbytes = sum(array.nbytes for array, _ in pixels)
        self._charge_budget(state, nbytes, step)
        return ("image", key, step, epoch, stamp, pixels), nbytes

    def _emit_scalar(self, key: str, step: int, epoch: int, stamp: float, value: float) -> None:
        """Record a scalar derived on a writer thread (tensor statistics)."""
        state = self._keys.get(key) or self._new_key(key, value, "scalar")
        self._writer.defer([(2 * self._cursor.written + 1, state.id, step, epoch, stamp, value)])
        state.count += 1

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
        self._reductions.append((pattern, Reduction(how, dtype, sample, bins)))
        return self

    def _reduction_for(self, key: str) -> Reduction:
        for pattern, reduction in reversed(self._reductions):
            if fnmatch.fnmatchcase(key, pattern):
                return reduction
        return _RAW

    def budget(self, nbytes: int, keys: str = "*") -> Run:
        """Cap the bytes recorded for tensors and images of keys matching ``keys``.

        Once the group has used its budget, its keys are thinned to log-spaced steps
        (0, 1, 2, 4, 8, ...); a warning says so and the run's capture metadata records when.
        """
        self._require_open()
        nbytes = _check_count("bytes", nbytes)
        if not isinstance(keys, str) or not keys:
            raise InvalidArgumentError(f"keys={keys!r}: expected a non-empty glob string")
        self._budgets.append({"keys": keys, "bytes": nbytes, "used": 0, "thinned_at": None})
        return self

    def _charge_budget(self, state: KeyState, nbytes: int, step: int) -> None:
        for budget in self._budgets:
            if not fnmatch.fnmatchcase(state.key, budget["keys"]):
                continue
            budget["used"] += nbytes
            if budget["thinned_at"] is None and budget["used"] > budget["bytes"]:
                budget["thinned_at"] = step
                thin = log_spaced()
                self._bindings.append((budget["keys"], thin))
                for other in self._keys.values():
                    if fnmatch.fnmatchcase(other.key, budget["keys"]):
                        policy = thin if other.policy is None else other.policy & thin
                        other.policy, other.check = policy, policy.compile(self._latest)
                warnings.warn(
                    f"stepstore: keys {budget['keys']!r} used {budget['used']} of their "
                    f"{budget['bytes']}-byte budget at step {step}; recording them at "
                    "log-spaced steps from now on",
                    RuntimeWarning,
                    stacklevel=4,
                )

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
        state = self._keys.get(key) if isinstance(key, str) else None
        if state is None:
            _check_key(key)
        elif state.kind != "record":
            raise KindMismatchError(f"key {key!r} holds {state.kind} values; got a record")
        data = record_json(key, plain_record(key, record))
        stamp = _wall_time(time)
        if step is not None:
            step = _check_count("step", step)
        if epoch is not None:
            epoch = _check_count("epoch", epoch)
        if state is None:
            state = self._new_key(key, record, "record")
            if state.kind != "record":  # another thread registered the key meanwhile
                raise KindMismatchError(f"key {key!r} holds {state.kind} values; got a record")
        if step is None:
            if self._step > _MAX_STEP:
                self._steps_exhausted()
            step = self._step
        if step <= state.last_step and not self._allow_rewind:
            _step_order_error(key, step, state.last_step)
        epoch = self._epoch if epoch is None else epoch
        stored_epoch = NO_EPOCH if epoch is None else epoch
        job = ("record", key, step, stored_epoch, stamp, data)
        self._submit([(job, len(data))])  # the run and the key move on once it is queued
        state.last_step, state.count = step, state.count + 1
        self._step, self._epoch = max(self._step, step + 1), epoch

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Store a file (a checkpoint, a config) with the run; returns its name.

        The file is opened here and copied by the writer thread (with its size and
        SHA-256), so its content must not change until ``flush()`` or ``finish()`` returns;
        moving or deleting it meanwhile is fine.
        """
        self._require_open()
        source = Path(os.fspath(path))
        if not source.is_file():
            raise InvalidArgumentError(f"path={str(source)!r}: not a file")
        name = _check_artifact_name(source.name if name is None else name)
        try:
            handle = open(source, "rb")  # noqa: SIM115 - the writer closes it once copied
        except OSError as exc:
            raise InvalidArgumentError(f"path={str(source)!r}: cannot read it ({exc})") from None
        try:
            self._submit([(("artifact", name, handle), os.fstat(handle.fileno()).st_size)])
        except BaseException:
            handle.close()
            raise
        return name

    def _update_latest(self, values: Mapping[str, Any]) -> None:
        for trigger in self._triggers:
            if trigger in values:
                value = to_scalar(trigger, values[trigger])
                self._latest[trigger] = float(values[trigger].item()) if value is DEFER else value

    def _compile_when(self, when: Policy) -> tuple[Check, tuple[str, ...]]:
        if not isinstance(when, Policy):
            raise InvalidArgumentError(
                f"when={when!r}: expected a capture policy such as stepstore.every(10)"
            )
        compiled = self._when.get(when)
        if compiled is None:
            self._add_triggers(when)
            compiled = self._when[when] = (when.compile(self._latest), tuple(sorted(when.triggers)))
        return compiled

    def _add_triggers(self, policy: Policy) -> None:
        self._triggers = tuple(sorted(set(self._triggers) | policy.triggers))

    def _bind(self, state: KeyState) -> None:
        for pattern, policy in reversed(self._bindings):
            if fnmatch.fnmatchcase(state.key, pattern):
                state.policy = policy
                state.check = policy.compile(self._latest)
                state.triggers = tuple(sorted(policy.triggers))
                return
        state.policy, state.check, state.triggers = None, None, ()

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
        with self._lock:
            self._bindings.append((pattern, when))
            self._add_triggers(when)
            for state in self._keys.values():
                self._bind(state)
        return self

    # -- lifecycle ----------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state is not _OPEN:
            self._not_open()

    def _not_open(self) -> None:
        if self._state is _FORKED:
            raise RunStateError(
                f"run {self.name} ({self.id}) belongs to process {self._record.pid}; a forked "
                "child cannot record into it (init a run in the child instead)"
            )
        raise RunStateError(
            f"run {self.name} ({self.id}) is {self._record.status}; it cannot record any more "
            "(stepstore.init(..., resume=RUN_ID) continues it)"
        )

    def _steps_exhausted(self) -> NoReturn:
        raise InvalidArgumentError(
            f"run {self.id}: its next automatic step {self._step} is past the largest step "
            f"{_MAX_STEP} (steps are signed 64-bit integers)"
        )

    def _writer_failed(self, writer: Writer | ArrayWriter | None = None) -> None:
        writer = writer or self._writer
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
                self._key_list,
                self._writer.resolved,
                keys,
                float(every),
            )
        return self

    def _sample_system(self, interval: float) -> None:
        """Start sampling system metrics under ``system/`` every ``interval`` seconds."""
        done = [s.last_step for k, s in self._keys.items() if k.startswith("system/")]
        self._system = SystemSampler(
            lambda key, step, stamp, value: self._emit_scalar(key, step, NO_EPOCH, stamp, value),
            interval,
            first_step=max(done, default=-1) + 1,
            path=str(self._backend.journal_dir),
        )

    def capture_info(self) -> dict[str, Any]:
        """Which policy governs each stored key and how many points it kept and skipped.

        ``keys`` lists the keys as stored, so each ``recorded`` is the count of its series.
        A tensor key reduced to statistics or a histogram (:meth:`reduce`) is stored as its
        outputs (``KEY/mean``, ..., ``KEY/histogram``, ``KEY/histogram_edges``): they stand
        in its place, each with the policy and skipped points of that key (``from``).
        """
        keys = dict(list(self._keys.items()))  # log() and the writers may add keys meanwhile
        entries: dict[str, dict[str, Any]] = {}
        for key, state in keys.items():
            how = self._reduced.get(key)
            outputs = [] if how is None else _REDUCED_OUTPUTS[how]
            produced = False
            for suffix in outputs:
                output = keys.get(f"{key}/{suffix}")
                stored = 0 if output is None else output.count  # restored on a resume
                recorded = stored + (state.count if how == "histogram" else 0)
                if recorded:
                    skipped = state.rejected + (0 if output is None else output.rejected)
                    entries[f"{key}/{suffix}"] = {
                        **_capture_entry(state, recorded, skipped),
                        "from": key,
                    }
                    produced = True
            if not produced:
                entries.setdefault(key, _capture_entry(state, state.count, state.rejected))
        return {
            "bindings": [{"pattern": p, "policy": repr(w)} for p, w in self._bindings],
            "reductions": [
                {"pattern": p, "how": r.how, "dtype": r.dtype, "sample": r.sample}
                for p, r in self._reductions
            ],
            "budgets": [dict(b) for b in self._budgets],
            "keys": entries,
        }

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
        _live_runs.discard(self)
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
        self._warn_unseen_triggers()

    def _warn_unseen_triggers(self) -> None:
        """Warn of each ``on_change(key)`` whose key was never logged: it recorded nothing."""
        uses = [(p, f"bound to {pattern!r}") for pattern, p in self._bindings]
        uses += [(p, "given as when=") for p in self._when]
        for policy, where in uses:
            for key in sorted(policy.triggers - self._keys.keys()):
                warnings.warn(
                    f"stepstore: run {self.name} ({self.id}): policy {policy!r} {where} "
                    f"reads key {key!r}, which was never logged in this run, so "
                    f"on_change({key!r}) recorded nothing; log {key!r} or name a key that "
                    "is logged",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> None:
        self.finish("finished" if kind is None else "crashed")

    def _restore_keys(self) -> None:
        """Take up a resumed run's keys, its step (one past the last training step) and its
        epoch (that of the last scalar point at that step). System keys count their own
        sample steps and move neither."""
        last: tuple[int, SeriesRecord] | None = None  # the scalar series that ends last
        for series in self._backend.series(self.id, self._rank):
            state = KeyState(len(self._key_list), series.key, series.kind)
            state.count = series.summary.count
            state.last_step = (
                series.summary.last_step if series.summary.last_step is not None else -1
            )
            self._keys[series.key] = state
            self._key_list.append((series.key, series.kind))
            if series.key.startswith("system/"):
                continue
            self._step = max(self._step, state.last_step + 1)
            ends_last = last is None or state.last_step > last[0]
            if series.kind == "scalar" and state.last_step >= 0 and ends_last:
                last = (state.last_step, series)
        if last is not None:
            self._epoch = self._last_epoch(*last)
        capture = self._record.capture.get("keys", {})
        for key, info in capture.items():
            if key in self._keys:
                self._keys[key].rejected = info.get("skipped", 0)

    def _last_epoch(self, step: int, series: SeriesRecord) -> int | None:
        """The epoch of a scalar series' last point, at ``step`` (None when it was logged
        without one)."""
        chunks = self._backend.chunks(series.id, steps=(step, step))
        if not chunks or chunks[-1].data is None:
            return None
        epoch = int(decode(chunks[-1].data, f"series {series.key!r}").epoch[-1])
        return None if epoch == NO_EPOCH else epoch


class IdleRun(Run):
    """The run as a non-zero rank of a distributed job sees it: every call does nothing.

    It has the shared run's id, so ranks can refer to it; rank 0 records.
    """

    def __init__(self, run_id: str, project: str, name: str | None, rank: int) -> None:
        self._record = RunRecord(id=run_id, project=project, name=name or run_id)
        self._rank = rank
        self._step = 0

    def __repr__(self) -> str:
        return f"<IdleRun {self.id} rank={self._rank} (rank 0 records)>"

    @property
    def store(self) -> str:
        """Rank 0's store (this rank writes nothing)."""
        return ""

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
        """Does nothing on this rank."""

    def log_record(
        self,
        key: str,
        record: Mapping[str, Any],
        step: int | None = None,
        epoch: int | None = None,
        *,
        time: float | None = None,
    ) -> None:
        """Does nothing on this rank."""

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Does nothing on this rank."""
        return name or Path(os.fspath(path)).name

    def policy(self, pattern: str, when: Policy) -> Run:
        """Does nothing on this rank."""
        return self

    def reduce(
        self,
        pattern: str,
        how: str | None = None,
        *,
        dtype: str | None = None,
        sample: int | None = None,
        bins: int = 64,
    ) -> Run:
        """Does nothing on this rank."""
        return self

    def budget(self, nbytes: int, keys: str = "*") -> Run:
        """Does nothing on this rank."""
        return self

    def flush(self) -> None:
        """Does nothing on this rank."""

    def finish(self, status: str = "finished") -> None:
        """Does nothing on this rank."""


def init(
    project: str,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    store: str | os.PathLike[str] | None = None,
    resume: str | None = None,
    *,
    array_store: str | os.PathLike[str] | None = None,
    allow_rewind: bool = False,
    flush_interval: float | None = None,
    on_error: str | None = None,
    ranks: str | None = None,
    console: bool = False,
    system: bool | float = False,
    **settings: Any,
) -> Run:
    """Start (or with ``resume=RUN_ID`` continue) a run and return it.

    Args:
        project: Project the run belongs to.
        name: Run name; generated (``adjective-noun-xxxx``) when omitted.
        params: Hyper-parameters, a nested dict of JSON-like values.
        tags: Free-form labels.
        store: Store path or URI; ``None`` means ``$STEPSTORE_URI`` or ``./stepstore``.
        resume: Id or name of a run to continue; its steps go on from the last recorded one.
        array_store: Where tensors, images and artifacts go (a path or fsspec URL); the
            store's ``arrays/`` directory by default. Recorded with the run.
        allow_rewind: Allow a key to be logged at a step below its last recorded step.
        flush_interval: Seconds between writer flushes (default 1).
        on_error: ``"raise"`` (default) or ``"warn"`` for writer errors.
        ranks: In a distributed job (see :mod:`stepstore.distributed`), ``"zero"``
            (default) records rank 0 and gives the other ranks an :class:`IdleRun`;
            ``"all"`` records every rank into the shared run, each point carrying its rank.
        console: Show a live progress line and per-epoch summary lines
            (:meth:`Run.console` with its defaults).
        system: Sample CPU, memory, disk, network and GPU metrics under ``system/`` on a
            background thread: True for every 10 s, or the seconds between samples.
        **settings: Other :class:`~stepstore.config.Config` fields (``chunk_size``, ...).

    Creates the store if it does not exist and recovers runs of processes that died.
    """
    if not isinstance(project, str) or not project.strip():
        raise InvalidArgumentError(f"project={project!r}: expected a non-empty string")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidArgumentError(f"name={name!r}: expected a non-empty string or None")
    if params is not None and not isinstance(params, Mapping):
        raise InvalidArgumentError(f"params={params!r}: expected a dict or None")
    if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags or ()):
        raise InvalidArgumentError(f"tags={tags!r}: expected a list of non-empty strings")
    interval = check_interval(system)
    if not isinstance(console, bool):
        raise InvalidArgumentError(f"console={console!r}: expected True or False")
    config = load_config(
        store=None if store is None else os.fspath(store),
        flush_interval=flush_interval,
        on_error=on_error,
        ranks=ranks,
        **settings,
    )
    rank, world = rank_and_world()
    if world > 1:
        shared = shared_run_id(rank, world)
        if rank != 0 and config.ranks != "all":
            return IdleRun(shared, project, name, rank)
    backend = open_backend(
        config.store, create=True, stale_after=config.stale_after, fsync=config.fsync
    )
    recover_orphans(backend, config.chunk_size)
    if world > 1 and rank != 0:
        return _join(backend, config, shared, project, rank, allow_rewind)
    if world > 1 and resume is None:
        with contextlib.suppress(NotFoundError):  # a restarted job continues its run
            resume = backend.get_run(shared).id
    if resume is not None:
        record = backend.get_run(resume)
        if record.project != project:
            raise InvalidArgumentError(
                f"resume={resume!r}: that run belongs to project {record.project!r}, "
                f"not {project!r}"
            )
        _refuse_live_writer(backend, record, record, 0)
        info = describe()
        backend.update_run(record.id, status="running", ended=None, heartbeat=time.time())
        record.status, record.pid, record.host = "running", info["pid"], info["host"]
        _install_handlers()
        run = Run(backend, record, config, allow_rewind=allow_rewind, resumed=True)
        return _with_extras(run, console, interval)
    run_id = shared if world > 1 else secrets.token_hex(8)
    info = describe()
    record = RunRecord(
        id=run_id,
        project=project,
        name=name or new_name(run_id),
        created=time.time(),
        heartbeat=time.time(),
        params=_plain(dict(params or {})),
        tags=list(dict.fromkeys(tags or ())),
        array_store=None if array_store is None else os.fspath(array_store),
        **info,
    )
    backend.create_run(record)
    _install_handlers()
    return _with_extras(Run(backend, record, config, allow_rewind=allow_rewind), console, interval)


def _with_extras(run: Run, console: bool, interval: float | None) -> Run:
    """``run`` with its progress line and system sampler started, as ``init`` was asked."""
    try:
        if interval is not None:
            run._sample_system(interval)
        if console:
            run.console()
    except BaseException:
        run.finish("crashed")
        raise
    return run


def _join(
    backend: Backend, config: Config, run_id: str, project: str, rank: int, allow_rewind: bool
) -> Run:
    """Rank ``rank``'s recorder of the run rank 0 creates (or created before a restart)."""
    deadline, pause = time.monotonic() + config.rank_wait, 0.01
    while True:
        try:
            record = backend.get_run(run_id)
            break
        except NotFoundError:
            if time.monotonic() >= deadline:
                raise NotFoundError(
                    f"rank {rank}: run {run_id} was not created in {backend.uri} within "
                    f"{config.rank_wait:g} s; rank 0 creates it: is it running with the same "
                    "store and $STEPSTORE_RUN_ID?"
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
    if record.project != project:
        raise InvalidArgumentError(
            f"rank {rank}: run {run_id} belongs to project {record.project!r}, not {project!r}"
        )
    for row in backend.ranks(run_id):
        if row.rank == rank:
            _refuse_live_writer(backend, record, row, rank)
    info = describe()
    row = backend.join_rank(run_id, rank, info["host"], info["pid"])
    record.status = row.status
    _install_handlers()
    return Run(
        backend,
        record,
        config,
        allow_rewind=allow_rewind,
        resumed=True,
        rank=rank,
        journal_seq=row.journal_seq,
    )


def _refuse_live_writer(
    backend: Backend, run: RunRecord, writer: RunRecord | RankRecord, rank: int
) -> None:
    """Raise ``RunStateError`` if a live process records ``rank`` of ``run``: on this host,
    one holding its journal; on another, one whose heartbeat is younger than ``stale_after``
    (which is what a ``running`` status means once read)."""
    journal = backend.journal_dir / journal_name(run.id, rank)
    held = is_held(journal)
    if held or (writer.status == "running" and writer.host != socket.gethostname()):
        where = f"process {writer.pid} on host {writer.host or '?'}"
        age = (
            ""
            if writer.heartbeat is None
            else f", last heartbeat {time.time() - writer.heartbeat:.0f} s ago"
        )
        of_rank = f" rank {rank}" if rank else ""
        raise RunStateError(
            f"run {run.name} ({run.id}){of_rank} is being recorded by {where}{age}; one "
            "process records a run at a time (resume it once that process has finished or "
            "died)"
        )


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Params as JSON-compatible values: NumPy scalars become Python numbers."""
    import json

    try:
        return json.loads(json.dumps(params, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"params: {exc}; expected JSON-like values") from None


def _json_default(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{value!r} of type {type(value).__name__} is not JSON-serialisable")


def _finish_all(status: str) -> None:
    for run in list(_live_runs):
        try:
            run.finish(status)
        except Exception as exc:  # noqa: BLE001 - exiting: report and go on
            warnings.warn(
                f"stepstore: could not finish run {run.id} at exit: {exc}",
                RuntimeWarning,
                stacklevel=1,
            )


def _finish_at_exit() -> None:
    _finish_all("incomplete")


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (preemption, ``kill``): flush every open run, mark it ``killed``, then exit
    with the signal's usual status."""
    _finish_all("killed")
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _on_uncaught(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    """An exception nobody caught ends the program: open runs are ``crashed`` (``killed``
    for Ctrl-C), not ``incomplete``; then the previous hook reports it as usual."""
    _finish_all("killed" if issubclass(kind, KeyboardInterrupt) else "crashed")
    _previous_excepthook(kind, error, tb)


_previous_excepthook = sys.excepthook


def _install_handlers() -> None:
    """Hook uncaught exceptions (chaining the hook in place), and take SIGTERM if nobody
    else has (main thread only); a user's SIGTERM handler is left alone."""
    global _previous_excepthook
    if sys.excepthook is not _on_uncaught:
        _previous_excepthook, sys.excepthook = sys.excepthook, _on_uncaught
    if threading.current_thread() is threading.main_thread() and signal.getsignal(
        signal.SIGTERM
    ) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)


def _detach_in_child() -> None:
    for run in list(_live_runs):
        run._state = _FORKED
    _live_runs.clear()


atexit.register(_finish_at_exit)
# Also before concurrent.futures shuts its executors down (fsspec object stores need them):
# its hook is registered when it is imported, and these hooks run last-registered first.
threading._register_atexit(_finish_at_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_detach_in_child)
