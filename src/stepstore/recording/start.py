"""Starting a run: ``init`` creates one, resumes one (``resume=``) or joins the run of a
distributed job as a non-zero rank; each refuses a run another live process records."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Mapping
from typing import Any

from ..backends import open_backend
from ..backends.base import Backend, RankRecord, RunRecord
from ..config import Config, load_config
from ..distributed import rank_and_world, shared_run_id
from ..environment import describe
from ..errors import InvalidArgumentError, NotFoundError, RunStateError
from ..system import check_interval
from ..values import plain_params
from .idle import IdleRun
from .journal import is_held, journal_name
from .names import new_name
from .recovery import recover_orphans
from .run import Run


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
            return IdleRun(shared, project, name, rank)  # type: ignore[return-value]
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
        params=plain_params(params or {}),
        tags=list(dict.fromkeys(tags or ())),
        array_store=None if array_store is None else os.fspath(array_store),
        **info,
    )
    backend.create_run(record)
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
    directory = backend.journal_dir
    held = directory is not None and is_held(directory / journal_name(run.id, rank))
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
