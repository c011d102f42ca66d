"""Recovery of runs whose process died: their journals are replayed into the store.

Any process that opens a store (to record or to read) claims the journals no live process
holds and writes their remaining points, exactly once: points at or below the run's
committed journal position are skipped, so a recovery interrupted half way is simply
repeated. The run's status (or, for the journal of a non-zero rank, that rank's status)
becomes ``crashed`` if it was still ``running``.
"""

from __future__ import annotations

import time

from .backends.base import Backend, RankRecord
from .errors import NotFoundError
from .journal import Journal, journal_owner, journal_paths
from .writer import SeriesSink, journal_columns


def recover_orphans(backend: Backend, chunk_size: int) -> list[str]:
    """Replay every orphaned journal of ``backend``; return the ids of recovered runs."""
    recovered = []
    for path in journal_paths(backend.journal_dir):
        journal = Journal.claim_orphan(path)
        if journal is None:
            continue
        run_id, rank = journal_owner(path)
        try:
            record = backend.get_run(run_id)
            position = record if rank == 0 else _rank_row(backend, run_id, rank)
        except NotFoundError:
            journal.close(remove=True)  # the run (or rank) was never created: nothing to keep
            continue
        try:
            records = journal.valid_after(position.journal_seq)
            names = journal.keys()
            keys = [
                names.get(i, (f"<unknown key {i}>", "scalar"))
                for i in range(max(names, default=-1) + 1)
            ]
            key_ids, columns = journal_columns(records)
            fields: dict[str, object] = {
                "journal_seq": int(records["seq"][-1]) if len(records) else position.journal_seq
            }
            if position.status in ("running", "crashed"):
                fields.update(status="crashed", ended=time.time())
            SeriesSink(backend, run_id, chunk_size, rank).write(keys, key_ids, columns, fields)
        except BaseException:
            journal.close(remove=False)
            raise
        journal.close(remove=True)
        recovered.append(run_id)
    return recovered


def _rank_row(backend: Backend, run_id: str, rank: int) -> RankRecord:
    for row in backend.ranks(run_id):
        if row.rank == rank:
            return row
    raise NotFoundError(f"run {run_id} has no rank {rank}")
