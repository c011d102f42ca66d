"""Recovery of runs whose process died: their journals are replayed into the store.

Any process that opens a store (to record or to read) claims the journals no live process
holds and writes their remaining points, exactly once: points at or below the run's
committed journal position are skipped, so a recovery interrupted half way is simply
repeated. The run's status (or, for the journal of a non-zero rank, that rank's status)
becomes ``crashed`` if it was still ``running``.

A recovery that fails (a full disk, a journal file that cannot be read) raises
:class:`~stepstore.errors.StoreError` naming the store or the journal, and leaves the
journal in place for the next attempt.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from ..backends.base import Backend, RankRecord
from ..errors import NotFoundError, StepstoreError, StoreError
from .journal import Journal, journal_columns, journal_owner, journal_paths
from .sink import ScalarSink


@contextlib.contextmanager
def _journal_errors(path: Path) -> Iterator[None]:
    """Raise an error of the block that is not a StepstoreError (a full disk, a journal
    file cut short) as a StoreError naming the journal."""
    try:
        yield
    except StepstoreError:
        raise
    except (OSError, ValueError, struct.error) as exc:
        raise StoreError(f"{path}: cannot recover the points of this journal ({exc})") from exc


def recover_orphans(backend: Backend, chunk_size: int) -> list[str]:
    """Replay every orphaned journal of ``backend``; return the ids of recovered runs."""
    recovered = []
    for path in journal_paths(backend.journal_dir):
        with _journal_errors(path):
            run_id = _recover(backend, chunk_size, path)
        if run_id is not None:
            recovered.append(run_id)
    return recovered


def _recover(backend: Backend, chunk_size: int, path: Path) -> str | None:
    """Replay one journal if no live process holds it and remove it; return its run id, or
    None. A journal whose replay fails stays for the next attempt."""
    journal = Journal.claim_orphan(path)
    if journal is None:
        return None
    try:
        run_id = _replay(backend, chunk_size, path, journal)
    except BaseException:
        journal.close(remove=False)
        raise
    journal.close(remove=True)
    return run_id


def _replay(backend: Backend, chunk_size: int, path: Path, journal: Journal) -> str | None:
    """Write the points of a claimed journal past its run's committed position; return the
    run id, or None when the run (or rank) was never created and there is nothing to keep."""
    run_id, rank = journal_owner(path)
    try:
        record = backend.get_run(run_id)
        position = record if rank == 0 else _rank_row(backend, run_id, rank)
    except NotFoundError:
        return None
    records = journal.valid_after(position.journal_seq)
    names = journal.keys()
    keys = [
        names.get(i, (f"<unknown key {i}>", "scalar")) for i in range(max(names, default=-1) + 1)
    ]
    key_ids, columns = journal_columns(records)
    fields: dict[str, object] = {
        "journal_seq": int(records["seq"][-1]) if len(records) else position.journal_seq
    }
    if position.status in ("running", "crashed"):
        fields.update(status="crashed", ended=time.time())
    ScalarSink(backend, run_id, chunk_size, rank).write(keys, key_ids, columns, fields)
    return run_id


def _rank_row(backend: Backend, run_id: str, rank: int) -> RankRecord:
    for row in backend.ranks(run_id):
        if row.rank == rank:
            return row
    raise NotFoundError(f"run {run_id} has no rank {rank}")
