"""The Store protocol every backend implements, and the records it exchanges.

A backend keeps run metadata relationally (runs, flattened params, tags, per-key series
summaries) and scalar series as chunk blobs (see ``stepstore.series.chunk``). Writes of one
writer flush go through :meth:`Backend.commit` as one transaction, data before the index
that points at it.
"""

from __future__ import annotations

import functools
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..errors import StoreError
from ..series import chunk as chunk_codec
from ..series.chunk import STATS_DTYPE, Columns, EncodedChunk
from ..series.tail import Summary
from ..tensors.dtypes import DTYPES
from ..tensors.index import ChunkIndex, Segment
from ..tensors.location import ArrayLocation

#: Columns of the runs table, in the order every backend selects them.
RUN_COLUMNS = (
    "id",
    "project",
    "name",
    "status",
    "created",
    "ended",
    "heartbeat",
    "host",
    "pid",
    "git_commit",
    "params",
    "tags",
    "env",
    "capture",
    "writer",
    "journal_seq",
    "array_store",
)
UPDATABLE = frozenset({"status", "ended", "heartbeat", "capture", "writer", "journal_seq"})
#: Fields of a non-zero rank's row (see :class:`RankRecord`) that a commit may set.
RANK_UPDATABLE = frozenset({"status", "ended", "heartbeat", "journal_seq"})

#: Columns of the run_ranks table, in the order of :class:`RankRecord`'s fields.
RANK_COLUMNS = ("run_id", "rank", "host", "pid", "status", "heartbeat", "ended", "journal_seq")

#: Chunks whose blobs one page of :meth:`Backend.check` holds in memory.
CHECK_PAGE = 64

RUN_STATUSES = ("running", "finished", "crashed", "incomplete", "failed", "killed")

_R = TypeVar("_R")


@dataclass
class RunRecord:
    """One run's metadata row."""

    id: str
    project: str
    name: str
    status: str = "running"
    created: float = 0.0
    ended: float | None = None
    heartbeat: float | None = None
    host: str = ""
    pid: int = 0
    git_commit: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    capture: dict[str, Any] = field(default_factory=dict)
    writer: dict[str, Any] = field(default_factory=dict)
    journal_seq: int = 0
    array_store: str | None = None


@dataclass
class RankRecord:
    """A non-zero rank recording into a run (``ranks="all"``): where it is, how far its
    journal is committed and its own status. Rank 0's are the run's own fields."""

    run_id: str
    rank: int
    host: str = ""
    pid: int = 0
    status: str = "running"
    heartbeat: float | None = None
    ended: float | None = None
    journal_seq: int = 0


@dataclass
class SeriesRecord:
    """One (run, key, rank) series with its summary."""

    id: int
    run_id: str
    key: str
    kind: str
    summary: Summary
    rank: int = 0


@dataclass
class ChunkRow:
    """A stored chunk as read back: index fields, statistics and (optionally) the blob."""

    series_id: int
    seq: int
    first_step: int
    last_step: int
    count: int
    sealed: bool
    stats: bytes
    data: bytes | None
    checksum: int
    min_epoch: int | None
    max_epoch: int | None


@dataclass(frozen=True)
class RecordRow:
    """One JSON record of a record series."""

    series_id: int
    step: int
    epoch: int | None
    time: int
    data: str


@dataclass(frozen=True)
class ImageRow:
    """One image (a PNG file in the array store) of an image series."""

    series_id: int
    step: int
    position: int
    epoch: int | None
    time: int
    caption: str | None
    path: str
    size: int
    checksum: int


@dataclass(frozen=True)
class EventRow:
    """Something that happened to a run at a step: a trigger that fired (a flight
    recorder's ``on_nan``, say), the key it watched and why."""

    run_id: str
    rank: int
    step: int
    time: float
    trigger: str
    key: str | None
    reason: str


@dataclass(frozen=True)
class ArtifactRow:
    """One stored file of a run, with its size and SHA-256."""

    run_id: str
    name: str
    path: str
    size: int
    sha256: str
    created: float


@dataclass
class ArrayBatch:
    """Index rows of array-store data written since the last flush, committed together."""

    segments: list[Segment] = field(default_factory=list)
    chunks: list[ChunkIndex] = field(default_factory=list)
    records: list[RecordRow] = field(default_factory=list)
    images: list[ImageRow] = field(default_factory=list)
    artifacts: list[ArtifactRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.segments or self.chunks or self.records or self.images or self.artifacts)


@dataclass
class RepairBatch:
    """Edits to the index that ``check --repair`` makes, applied together.

    Attributes:
        chunks: Scalar chunks to delete, as ``(series_id, seq)``.
        chunk_index: Scalar chunks whose index fields and statistics to set from these
            (made from the chunk's own points), as ``(series_id, chunk)``; the blob stays.
        summaries: Full summaries to set on scalar series, as ``(series_id, summary)``.
        step_summaries: Summaries to set on non-scalar series, as
            ``(series_id, count, first_step, last_step)``.
        tensor_chunks: Tensor chunk index rows to delete, as ``(series_id, segment, chunk)``.
        cut_tensor_chunks: Tensor chunk index rows to replace (same key) by these shorter ones.
        images: Images to delete, as ``(series_id, step, position)``.
        artifacts: Artifacts to delete, as ``(run_id, name)``.
    """

    chunks: list[tuple[int, int]] = field(default_factory=list)
    chunk_index: list[tuple[int, EncodedChunk]] = field(default_factory=list)
    summaries: list[tuple[int, Summary]] = field(default_factory=list)
    step_summaries: list[tuple[int, int, int | None, int | None]] = field(default_factory=list)
    tensor_chunks: list[tuple[int, int, int]] = field(default_factory=list)
    cut_tensor_chunks: list[ChunkIndex] = field(default_factory=list)
    images: list[tuple[int, int, int]] = field(default_factory=list)
    artifacts: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.chunks
            or self.chunk_index
            or self.summaries
            or self.step_summaries
            or self.tensor_chunks
            or self.cut_tensor_chunks
            or self.images
            or self.artifacts
        )


@dataclass
class Problem:
    """One integrity problem found by :meth:`Backend.check`."""

    where: str
    what: str


def dotted_params(params: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested params as ``(dotted.path, value)`` pairs, as the filter language names them
    (``{"model": {"width": 64}}`` gives ``("model.width", 64)``); an empty dict is a value."""
    for key, value in params.items():
        if isinstance(value, dict) and value:
            yield from dotted_params(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def flatten_params(params: dict[str, Any]) -> Iterator[tuple[str, float | None, str | None]]:
    """Nested params as ``(path, number, string)`` rows for the filter language.

    Numbers and booleans go to ``number`` (true = 1), strings to ``string``, lists to
    ``string`` as JSON text; ``None`` gives a row with neither, an empty dict no row.
    """
    for path, value in dotted_params(params):
        if isinstance(value, dict):
            continue
        if isinstance(value, bool):
            yield path, float(value), None
        elif isinstance(value, (int, float)):
            number = float(value)
            yield (
                path,
                (number if math.isfinite(number) else None),
                (None if math.isfinite(number) else repr(number)),
            )
        elif isinstance(value, str):
            yield path, None, value
        elif value is None:
            yield path, None, None
        else:
            yield path, None, json.dumps(value, sort_keys=True, default=str)


# -- rows as read back -------------------------------------------------------------------
#
# A damaged database can hand back a value of another type than its column's (a byte flip
# in a SQLite record header, say). Rows are checked as they are read, so such damage is a
# StoreError naming the store and the column, not a TypeError somewhere downstream.


class _TypeMismatchError(Exception):
    """A stored value is not of its column's type; the message says what was expected."""


def _integer(value: Any) -> int:
    if isinstance(value, int):
        return int(value)
    raise _TypeMismatchError("an integer")


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _TypeMismatchError("a number")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _TypeMismatchError("text")


def _blob(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise _TypeMismatchError("bytes")


def _json(value: Any, kind: type, expected: str) -> Any:
    try:
        parsed = json.loads(_text(value))
    except ValueError:
        raise _TypeMismatchError(expected) from None
    if not isinstance(parsed, kind):
        raise _TypeMismatchError(expected)
    return parsed


def _shape(value: Any) -> tuple[int, ...]:
    shape = _json(value, list, "a JSON list of sizes")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _TypeMismatchError("a JSON list of sizes")
    return tuple(shape)


def _dtype(value: Any) -> str:
    if _text(value) in DTYPES:
        return str(value)
    raise _TypeMismatchError(f"one of {', '.join(DTYPES)}")


def _tags(value: Any) -> list[str]:
    tags = _json(value, list, "a JSON list of tags")
    if not all(isinstance(t, str) for t in tags):
        raise _TypeMismatchError("a JSON list of tags")
    return tags


_KINDS: dict[str, Any] = {
    "int": _integer,
    "bool": lambda value: bool(_integer(value)),
    "float": _number,
    "text": _text,
    "blob": _blob,
    "object": lambda value: _json(value, dict, "a JSON object"),
    "tags": _tags,
    "shape": _shape,
    "dtype": _dtype,
}

#: Columns of each record read back, as ``name:kind`` (``?``: NULL allowed).
ROW_TYPES: dict[type, str] = {
    RunRecord: "id:text project:text name:text status:text created:float ended:float? "
    "heartbeat:float? host:text pid:int git_commit:text? params:object tags:tags env:object "
    "capture:object writer:object journal_seq:int array_store:text?",
    RankRecord: "run_id:text rank:int host:text pid:int status:text heartbeat:float? "
    "ended:float? journal_seq:int",
    ChunkRow: "series_id:int seq:int first_step:int last_step:int count:int sealed:bool "
    "stats:blob data:blob? checksum:int min_epoch:int? max_epoch:int?",
    Segment: "series_id:int segment:int shape:shape dtype:dtype chunk_steps:int codec:text "
    "path:text",
    ChunkIndex: "series_id:int segment:int chunk:int first_step:int last_step:int count:int "
    "sealed:bool steps:blob epochs:blob times:blob checksums:blob positions:blob",
    RecordRow: "series_id:int step:int epoch:int? time:int data:text",
    ImageRow: "series_id:int step:int position:int epoch:int? time:int caption:text? "
    "path:text size:int checksum:int",
    ArtifactRow: "run_id:text name:text path:text size:int sha256:text created:float",
    EventRow: "run_id:text rank:int step:int time:float trigger:text key:text? reason:text",
}
#: Columns of a series row: id, key, kind, the summary and the rank.
SERIES_TYPES = (
    "id:int key:text kind:text count:int min:float? max:float? last:float? first_step:int? "
    "last_step:int? rank:int"
)


@functools.lru_cache(maxsize=64)
def _columns(types: str) -> tuple[tuple[str, Any, bool], ...]:
    """``types`` parsed: per column its name, converter and whether NULL is allowed."""
    parsed = (column.split(":") for column in types.split())
    return tuple((name, _KINDS[kind.rstrip("?")], kind.endswith("?")) for name, kind in parsed)


def decode_row(values: Sequence[Any], types: str, where: str) -> list[Any]:
    """``values`` as the types ``types`` names (``name:kind`` per column, ``?`` where NULL is
    allowed).

    Raises:
        StoreError: A value is of another type (the database is damaged); the message
            starts with ``where`` and names the column.
    """
    columns = _columns(types)
    if len(values) != len(columns):
        raise StoreError(f"{where}: a row holds {len(values)} values, expected {len(columns)}")
    decoded: list[Any] = []
    for (name, convert, nullable), value in zip(columns, values, strict=True):
        if value is None and nullable:
            decoded.append(None)
            continue
        try:
            decoded.append(convert(value))
        except _TypeMismatchError as exc:
            raise StoreError(
                f"{where}: column {name} holds {value!r:.80}, expected {exc}; the database is "
                "damaged"
            ) from None
    return decoded


def row_of(cls: type[_R], values: Sequence[Any], where: str) -> _R:
    """A record of type ``cls`` (a key of :data:`ROW_TYPES`) from a row read back; raises
    ``StoreError`` naming ``where`` and the column when a value has another type."""
    return cls(*decode_row(values, ROW_TYPES[cls], where))


# -- scalar chunks against their index rows ------------------------------------------------


def decode_chunk(row: ChunkRow, where: str) -> Columns:
    """The points of a scalar chunk row read with its data.

    Raises:
        StoreError: The blob fails its checksum, does not decode or holds no point; the
            message starts with ``where``.
    """
    data = row.data or b""
    if chunk_codec.checksum(data) != row.checksum:
        raise StoreError(f"{where}: checksum mismatch")
    columns = chunk_codec.decode(data, where)
    if not len(columns.step):
        raise StoreError(f"{where}: the chunk holds no point")
    return columns


def index_fields(row: ChunkRow, columns: Columns) -> EncodedChunk:
    """What the index row of a scalar chunk holding ``columns`` says (its blob is kept)."""
    return chunk_codec.indexed(row.seq, row.sealed, columns, row.data or b"", row.checksum)


def index_differences(row: ChunkRow, expected: EncodedChunk, columns: Columns) -> list[str]:
    """Fields of a scalar chunk's index row that differ from ``expected`` (see
    :func:`index_fields`), statistics by name; ``columns`` are the chunk's points.

    The step range is the smallest and largest step; a chunk written before 0.5 holds its
    first and last step instead (the same unless the series was rewound), which is accepted.
    The sum may differ in its last bits (a summation order of another NumPy); the other
    statistics are picked from the points, so they must match bit for bit.
    """
    ends = (int(columns.step[0]), int(columns.step[-1])) if len(columns.step) else None
    steps = (row.first_step, row.last_step)
    differ = [
        name
        for name, stored, made in (
            ("first_step", row.first_step, expected.first_step),
            ("last_step", row.last_step, expected.last_step),
        )
        if stored != made and steps != ends
    ]
    differ += [
        name
        for name, stored, made in (
            ("min_epoch", row.min_epoch, expected.min_epoch),
            ("max_epoch", row.max_epoch, expected.max_epoch),
            ("count", row.count, expected.size),
        )
        if stored != made
    ]
    values = columns.value
    if len(row.stats) != STATS_DTYPE.itemsize:
        return [*differ, "statistics"]
    stored, made = (np.frombuffer(b, STATS_DTYPE)[0] for b in (row.stats, expected.stats))
    for name in STATS_DTYPE.names or ():
        if stored[name].tobytes() == made[name].tobytes():
            continue
        if name == "sum" and _close_sums(float(stored[name]), float(made[name]), values):
            continue
        differ.append(f"statistics {name}")
    return differ


def _close_sums(stored: float, made: float, values: np.ndarray) -> bool:
    """Whether two sums of ``values`` differ only by rounding."""
    if not (math.isfinite(stored) and math.isfinite(made)):
        return False
    scale = float(np.nansum(np.abs(values[np.isfinite(values)])))
    return abs(stored - made) <= 1e-9 * scale


def chunk_problem(row: ChunkRow, where: str) -> str | None:
    """What is wrong with a scalar chunk read with its data (``where`` names it), or None."""
    try:
        columns = decode_chunk(row, where)
    except StoreError as exc:
        return str(exc).removeprefix(f"{where}: ")
    differ = index_differences(row, index_fields(row, columns), columns)
    if differ:
        return f"its index row differs from its points ({', '.join(differ)})"
    return None


def _chunk_problems(
    values: Sequence[Any], names: dict[Any, tuple[str, str, int]]
) -> list[tuple[tuple[str, str, int, int], Problem]]:
    """The problem of one chunk row (columns of :class:`ChunkRow`), with its sort key."""
    run_id, key, rank = names.get(values[0], ("?", f"<series {values[0]!r}>", 0))
    seq = values[1] if isinstance(values[1], int) else -1
    where = f"{series_label(run_id, key, rank)} chunk {values[1]!r}"
    try:
        what = chunk_problem(row_of(ChunkRow, values, where), where)
    except StoreError as exc:
        what = str(exc).removeprefix(f"{where}: ")
    return [] if what is None else [((run_id, key, rank, seq), Problem(where, what))]


def series_label(run_id: str, key: str, rank: int = 0) -> str:
    """How messages name a series: ``run ID key 'KEY'``, then ``rank N`` for a non-zero rank."""
    return f"run {run_id} key {key!r}" + (f" rank {rank}" if rank else "")


class Backend(ABC):
    """One metadata store (a URI scheme). Methods are safe to call from several threads."""

    #: URI schemes this backend serves, e.g. ``("file", "")`` for the embedded store.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Whether the store outlives the process (all but one in memory).
    persistent: ClassVar[bool] = True
    uri: str
    #: Seconds without a heartbeat after which a ``running`` run reads as ``crashed``.
    stale_after: float = 60.0

    @classmethod
    def from_uri(
        cls, uri: str, rest: str, *, create: bool, stale_after: float, fsync: bool
    ) -> Backend:
        """Open the store ``uri`` names (``rest``: the URI after its ``scheme://``)."""
        return cls(uri, create=create, stale_after=stale_after, fsync=fsync)  # type: ignore[call-arg]

    def _record(self, row: Sequence[Any]) -> RunRecord:
        """A run row (columns as :data:`RUN_COLUMNS`) as a record, stale status applied.

        Raises:
            StoreError: The row is damaged (a value of another type, JSON that does not
                parse).
        """
        record = row_of(RunRecord, row, f"{self.uri}: run {row[0]!r:.80}")
        if record.status == "running" and (record.heartbeat or record.created) < (
            time.time() - self.stale_after
        ):
            record.status = "crashed"
        return record

    def _rank_record(self, row: Sequence[Any]) -> RankRecord:
        """A rank row (columns as :data:`RANK_COLUMNS`) as a record, stale status applied."""
        record = row_of(RankRecord, row, f"{self.uri}: a rank of run {row[0]!r:.80}")
        if record.status == "running" and (record.heartbeat or 0.0) < (
            time.time() - self.stale_after
        ):
            record.status = "crashed"
        return record

    @property
    @abstractmethod
    def schema_version(self) -> int:
        """The schema version of the open store (after its migrations ran)."""

    @property
    @abstractmethod
    def journal_dir(self) -> Path | None:
        """Local directory where this process keeps run journals for this store; ``None``
        for a store that keeps none (one in memory)."""

    @property
    @abstractmethod
    def default_array_store(self) -> str:
        """Where runs keep tensors, images and artifacts unless given ``array_store=``."""

    def array_location(self, array_store: str | None) -> ArrayLocation:
        """Where a run whose record names ``array_store`` keeps its tensors, images and
        artifacts: there, or this store's default."""
        return ArrayLocation(array_store or self.default_array_store)

    @abstractmethod
    def create_run(self, run: RunRecord) -> None:
        """Insert a new run with its params and tags."""

    @abstractmethod
    def get_run(self, id_or_name: str) -> RunRecord:
        """The run with this id, or the only run with this name (``NotFoundError`` otherwise)."""

    @abstractmethod
    def find_runs(self, where: str | None = None, project: str | None = None) -> list[RunRecord]:
        """Runs matching a filter expression and project, oldest first."""

    @abstractmethod
    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set fields of a run row (status, ended, heartbeat, capture, writer, journal_seq)."""

    @abstractmethod
    def update_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Replace a run's params (and the flattened rows filters read) in one transaction.

        Raises:
            NotFoundError: No run has this id.
        """

    @abstractmethod
    def join_rank(self, run_id: str, rank: int, host: str, pid: int) -> RankRecord:
        """Register rank ``rank`` (> 0) as recording into the run: its row is created, or
        set running again with this host and pid keeping its journal position."""

    @abstractmethod
    def ranks(self, run_id: str) -> list[RankRecord]:
        """The rows of the run's non-zero ranks, by rank."""

    @abstractmethod
    def series(self, run_id: str, rank: int | None = 0) -> list[SeriesRecord]:
        """The series one rank recorded in a run (all ranks' with ``None``), by key."""

    @abstractmethod
    def series_of_runs(self, run_ids: Sequence[str]) -> dict[str, list[SeriesRecord]]:
        """Every rank's series of each of ``run_ids``, by run id (every id is a key), as
        :meth:`series` gives them, read in a few queries rather than one per run."""

    @abstractmethod
    def ensure_series(self, run_id: str, key: str, kind: str, rank: int = 0) -> int:
        """Id of the rank's series for ``key``, created if missing; checks the kind matches."""

    @abstractmethod
    def open_chunk(self, series_id: int) -> ChunkRow | None:
        """The series' last chunk if it is not sealed (resuming appends to it)."""

    @abstractmethod
    def next_chunk_seq(self, series_id: int) -> int:
        """Sequence number the series' next new chunk gets."""

    @abstractmethod
    def commit(
        self,
        run_id: str,
        chunks: Sequence[tuple[int, EncodedChunk]],
        summaries: Sequence[tuple[int, Summary]],
        run_fields: dict[str, Any],
        rank: int = 0,
    ) -> None:
        """Write chunks (replacing an open chunk with the same seq), summaries and run
        fields in one transaction; a non-zero ``rank`` sets the fields of its rank row."""

    @abstractmethod
    def chunks(
        self,
        series_id: int,
        steps: tuple[int, int] | None = None,
        epochs: tuple[int, int] | None = None,
        with_data: bool = True,
    ) -> list[ChunkRow]:
        """Chunks of a series overlapping the inclusive step and epoch ranges, in order."""

    @abstractmethod
    def commit_arrays(self, batch: ArrayBatch) -> None:
        """Write tensor index rows, records, image and artifact rows in one transaction."""

    @abstractmethod
    def tensor_index(self, series_id: int) -> tuple[list[Segment], list[ChunkIndex]]:
        """Segments and chunk index rows of a tensor series, in order.

        Chunk rows are read before segments, so the segment of every chunk returned is there
        even while a writer flushes (a flush committed between the reads can only add
        segments that no returned chunk uses yet)."""

    @abstractmethod
    def records(self, series_id: int) -> list[RecordRow]:
        """Records of a record series in step order."""

    @abstractmethod
    def images(self, series_id: int) -> list[ImageRow]:
        """Images of an image series in step order."""

    @abstractmethod
    def artifacts(self, run_id: str) -> list[ArtifactRow]:
        """Artifacts of a run by name."""

    @abstractmethod
    def add_event(self, event: EventRow) -> None:
        """Store an event of a run."""

    @abstractmethod
    def events(self, run_id: str) -> list[EventRow]:
        """The events of a run, by time (then step and rank)."""

    @abstractmethod
    def apply_repairs(self, batch: RepairBatch) -> None:
        """Apply the edits of ``batch`` in one transaction (an empty batch writes nothing)."""

    def check(self) -> list[Problem]:
        """Verify the database itself and every scalar chunk: its checksum, that it decodes
        and that its index row (steps, epochs, count, statistics) is that of its points.

        Returns what is damaged: the database's own problems first, then chunks by run, key
        and chunk. Chunks are read in pages of :data:`CHECK_PAGE`, each on its own, so a
        check of a large store neither holds every blob in memory nor blocks writers; a
        page that cannot be read is reported and ends the scan (the database is damaged).
        """
        problems = self._check_database()
        names = self._names(problems)
        found: list[tuple[tuple[str, str, int, int], Problem]] = []
        after: tuple[Any, Any] = (-1, -1)
        while True:
            try:
                page = self._chunk_page(after, CHECK_PAGE)
            except StoreError as exc:
                problems.append(Problem(self.uri, str(exc)))
                break
            for values in page:
                found.extend(_chunk_problems(values, names))
            if len(page) < CHECK_PAGE:
                break
            after = (page[-1][0], page[-1][1])
        return problems + [problem for _, problem in sorted(found, key=lambda item: item[0])]

    def _names(self, problems: list[Problem]) -> dict[Any, tuple[str, str, int]]:
        """Run id, key and rank of each series id, for messages; a series row that cannot
        be read is added to ``problems`` (its chunks are then named by series id)."""
        try:
            rows = self._series_names()
        except StoreError as exc:
            problems.append(Problem(self.uri, str(exc)))
            return {}
        names = {}
        for row in rows:
            try:
                sid, run_id, key, rank = decode_row(
                    row, "id:int run_id:text key:text rank:int", f"{self.uri}: series {row[0]!r}"
                )
            except StoreError as exc:
                problems.append(Problem(self.uri, str(exc)))
                continue
            names[sid] = (run_id, key, rank)
        return names

    @abstractmethod
    def _check_database(self) -> list[Problem]:
        """Problems of the database itself (its integrity, its schema version)."""

    @abstractmethod
    def _series_names(self) -> list[Any]:
        """Rows ``(id, run_id, key, rank)`` of every series, unchecked."""

    @abstractmethod
    def _chunk_page(self, after: tuple[Any, Any], size: int) -> list[Any]:
        """Up to ``size`` chunk rows (columns of :class:`ChunkRow`, with data, unchecked)
        whose ``(series_id, seq)`` follows ``after``, in that order."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
