"""The Store protocol every backend implements, and the records it exchanges.

A backend keeps run metadata relationally (runs, flattened params, tags, per-key series
summaries) and scalar series as chunk blobs (see ``stepstore.series.chunk``). Writes of one
writer flush go through :meth:`Backend.commit` as one transaction, data before the index
that points at it.
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..series.chunk import EncodedChunk
from ..series.tail import Summary
from ..tensors.index import ChunkIndex, Segment

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
JSON_FIELDS = ("params", "tags", "env", "capture", "writer")
UPDATABLE = frozenset({"status", "ended", "heartbeat", "capture", "writer", "journal_seq"})
#: Fields of a non-zero rank's row (see :class:`RankRecord`) that a commit may set.
RANK_UPDATABLE = frozenset({"status", "ended", "heartbeat", "journal_seq"})

#: Columns of the run_ranks table, in the order of :class:`RankRecord`'s fields.
RANK_COLUMNS = ("run_id", "rank", "host", "pid", "status", "heartbeat", "ended", "journal_seq")

RUN_STATUSES = ("running", "finished", "crashed", "incomplete", "failed", "killed")


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
        summaries: Full summaries to set on scalar series, as ``(series_id, summary)``.
        step_summaries: Summaries to set on non-scalar series, as
            ``(series_id, count, first_step, last_step)``.
        tensor_chunks: Tensor chunk index rows to delete, as ``(series_id, segment, chunk)``.
        cut_tensor_chunks: Tensor chunk index rows to replace (same key) by these shorter ones.
        images: Images to delete, as ``(series_id, step, position)``.
        artifacts: Artifacts to delete, as ``(run_id, name)``.
    """

    chunks: list[tuple[int, int]] = field(default_factory=list)
    summaries: list[tuple[int, Summary]] = field(default_factory=list)
    step_summaries: list[tuple[int, int, int | None, int | None]] = field(default_factory=list)
    tensor_chunks: list[tuple[int, int, int]] = field(default_factory=list)
    cut_tensor_chunks: list[ChunkIndex] = field(default_factory=list)
    images: list[tuple[int, int, int]] = field(default_factory=list)
    artifacts: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.chunks
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


def flatten_params(
    params: dict[str, Any], prefix: str = ""
) -> Iterator[tuple[str, float | None, str | None]]:
    """Flatten nested params to ``(path, number, string)`` rows for the filter language.

    Numbers and booleans go to ``number`` (true = 1), strings to ``string``, lists to
    ``string`` as JSON text; ``None`` gives a row with neither.
    """
    for key, value in params.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten_params(value, f"{path}.")
        elif isinstance(value, bool):
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


def series_label(run_id: str, key: str, rank: int = 0) -> str:
    """How messages name a series: ``run ID key 'KEY'``, then ``rank N`` for a non-zero rank."""
    return f"run {run_id} key {key!r}" + (f" rank {rank}" if rank else "")


def run_row(rank: int) -> tuple[str, str, frozenset[str]]:
    """Where a commit of ``rank`` puts its run fields: ``WHERE`` clause (``%s`` for the run
    id, then the rank), table and the fields it may set."""
    if rank == 0:
        return "id = %s", "runs", UPDATABLE
    return 'run_id = %s AND "rank" = %s', "run_ranks", RANK_UPDATABLE


def chunk_selection(
    series_id: int,
    steps: tuple[int, int] | None,
    epochs: tuple[int, int] | None,
    param: str,
) -> tuple[str, list[int]]:
    """``WHERE`` clause (ordered by seq) and arguments choosing a series' chunks that overlap
    inclusive step and epoch ranges; ``param`` is the driver's placeholder."""
    clause, args = f"WHERE series_id = {param}", [series_id]
    if steps is not None:
        clause += f" AND last_step >= {param} AND first_step <= {param}"
        args += [steps[0], steps[1]]
    if epochs is not None:
        clause += f" AND max_epoch >= {param} AND min_epoch <= {param}"
        args += [epochs[0], epochs[1]]
    return clause + " ORDER BY seq", args


class Backend(ABC):
    """One metadata store (a URI scheme). Methods are safe to call from several threads."""

    #: URI schemes this backend serves, e.g. ``("file", "")`` for the embedded store.
    schemes: ClassVar[tuple[str, ...]] = ()
    uri: str
    #: Seconds without a heartbeat after which a ``running`` run reads as ``crashed``.
    stale_after: float = 60.0

    def _record(self, row: Sequence[Any]) -> RunRecord:
        """A run row (columns as :data:`RUN_COLUMNS`) as a record, stale status applied."""
        data = dict(zip(RUN_COLUMNS, row, strict=True))
        for name in JSON_FIELDS:
            data[name] = json.loads(data[name])
        record = RunRecord(**data)
        if record.status == "running" and (record.heartbeat or record.created) < (
            time.time() - self.stale_after
        ):
            record.status = "crashed"
        return record

    def _rank_record(self, row: Sequence[Any]) -> RankRecord:
        """A rank row (columns as :data:`RANK_COLUMNS`) as a record, stale status applied."""
        record = RankRecord(*row)
        if record.status == "running" and (record.heartbeat or 0.0) < (
            time.time() - self.stale_after
        ):
            record.status = "crashed"
        return record

    def _status_sql(self) -> str:
        """SQL for a run's status as readers see it (a stale ``running`` is ``crashed``)."""
        cutoff = float(time.time() - self.stale_after)
        return (
            "(CASE WHEN r.status = 'running' AND COALESCE(r.heartbeat, r.created) < "
            f"{cutoff!r} THEN 'crashed' ELSE r.status END)"
        )

    @property
    @abstractmethod
    def schema_version(self) -> int:
        """The schema version of the open store (after its migrations ran)."""

    @property
    @abstractmethod
    def journal_dir(self) -> Path:
        """Local directory where this process keeps run journals for this store."""

    @property
    @abstractmethod
    def default_array_store(self) -> str:
        """Where runs keep tensors, images and artifacts unless given ``array_store=``."""

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
    def apply_repairs(self, batch: RepairBatch) -> None:
        """Apply the edits of ``batch`` in one transaction (an empty batch writes nothing)."""

    @abstractmethod
    def check(self) -> list[Problem]:
        """Verify schema, metadata and every chunk checksum; return what is damaged."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
