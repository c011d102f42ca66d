"""Import TensorBoard log directories: one run per directory holding event files.

The run is named after the directory's path relative to the log directory (the log
directory's own name when the files lie in it directly); the project is the one given, or
the log directory's name. What each summary becomes is listed in
:mod:`stepstore.io.tensorboard_events`; values are kept bit for bit, wall times to the
microsecond (the store's resolution).

Importing is idempotent: each run carries the tag ``imported_from:tensorboard:<id>``, the
id derived from the absolute path of its directory and the names of its event files, and a
directory whose run is already in the store is skipped. A run is imported whole, or ends
``incomplete`` with a record ``import/skipped`` per problem (``file`` and ``what``): a
damaged part of a file (a bad CRC, a truncated record) or a tag that is not imported.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import load_config
from ..errors import InvalidArgumentError, StepstoreError
from ..query.views import Store
from ..recording.run import Run
from ..recording.sink import ScalarSink
from ..recording.start import init
from ..series.chunk import NO_EPOCH, Columns
from ..tensors.images import Image
from .tensorboard_events import RunEvents, event_files, protos, read_run

#: The tag every imported run carries before its id.
SOURCE_TAG = "imported_from:tensorboard:"
#: The record key listing what could not be imported.
SKIPPED_KEY = "import/skipped"


@dataclass(frozen=True)
class Imported:
    """One directory's outcome: ``imported`` (``finished`` or ``incomplete``) or
    ``skipped`` (already in the store), with its values counted and its problems."""

    directory: str
    name: str
    run_id: str
    action: str
    status: str
    values: int = 0
    problems: list[str] = field(default_factory=list)


def run_directories(logdir: Path) -> list[tuple[Path, list[Path]]]:
    """Directories under ``logdir`` (itself included) holding event files, with their files,
    in path order."""
    found = []
    for folder, dirs, _ in os.walk(logdir):
        dirs.sort()
        files = event_files(Path(folder))
        if files:
            found.append((Path(folder), files))
    return sorted(found)


def source_id(directory: Path, files: list[Path]) -> str:
    """The stable id of a run directory: its absolute path and its event files' names."""
    text = "\n".join([str(directory.resolve()), *(f.name for f in files)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def import_tensorboard(
    logdir: str | os.PathLike[str],
    store: Store,
    project: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Imported]:
    """Import every run directory under ``logdir`` into ``store`` (see the module docstring).

    ``progress`` is called with the bytes of event files done after each directory.
    Raises ``InvalidArgumentError`` when ``logdir`` is not a directory or holds no event
    files, ``MissingDependencyError`` without the ``tensorboard`` package.
    """
    root = Path(logdir)
    if not root.is_dir():
        raise InvalidArgumentError(f"LOGDIR {str(root)!r}: not a directory")
    directories = run_directories(root)
    if not directories:
        raise InvalidArgumentError(
            f"LOGDIR {str(root)!r}: no TensorBoard event files (names containing "
            "'tfevents') in it or in any directory below it"
        )
    protos()
    project = project or root.resolve().name
    done = []
    for directory, files in directories:
        done.append(_import_directory(root, directory, files, store, project))
        if progress is not None:
            progress(sum(f.stat().st_size for f in files))
    return done


def total_bytes(logdir: str | os.PathLike[str]) -> int:
    """Bytes of the event files ``import_tensorboard`` would read."""
    return sum(f.stat().st_size for _, files in run_directories(Path(logdir)) for f in files)


def _import_directory(
    root: Path, directory: Path, files: list[Path], store: Store, project: str
) -> Imported:
    relative = directory.relative_to(root).as_posix()
    name = root.resolve().name if relative == "." else relative
    tag = SOURCE_TAG + source_id(directory, files)
    for view in store.runs(where=f"'{tag}' in tags"):
        return Imported(relative, view.name, view.id, "skipped", view.status)
    events = read_run(files, root)
    problems = [(file, str(d)) for file, damage in events.damage.items() for d in damage]
    problems += events.unsupported
    run = init(
        project,
        name,
        params=events.params,
        tags=["tensorboard", tag],
        store=store.uri,
        allow_rewind=True,
    )
    try:
        values = _write_scalars(run, store, events)
        values += _write_items(run, events, problems)
        for i, (file, what) in enumerate(problems):
            run.log_record(SKIPPED_KEY, {"file": file, "what": what}, step=i)
    except BaseException:
        run.finish("crashed")
        raise
    status = "incomplete" if problems else "finished"
    run.finish(status)
    described = [f"{file}: {what}" for file, what in problems]
    return Imported(relative, name, run.id, "imported", status, values, described)


def _write_scalars(run: Run, store: Store, events: RunEvents) -> int:
    """Write each tag's scalar points as chunks, straight into the store."""
    sink = ScalarSink(store.backend, run.id, load_config(store=store.uri).chunk_size)
    count = 0
    for tag, points in events.scalars.items():
        step, wall, value = points.columns()
        columns = Columns(
            step,
            np.full(len(step), NO_EPOCH, np.int64),
            np.round(wall * 1e6).astype(np.int64),
            value,
        )
        count += sink.write([(tag, "scalar")], np.zeros(len(step), np.int64), columns, {})
    return count


def _write_items(run: Run, events: RunEvents, problems: list[tuple[str, str]]) -> int:
    """Log tensors, images and records with their steps and wall times; a value the run
    refuses becomes a problem (once per key)."""
    refused: set[str] = set()
    count = 0
    for item in sorted(events.items, key=lambda i: (i.key, i.step, i.order)):
        if item.key in refused:
            continue
        try:
            if item.kind == "record":
                run.log_record(item.key, item.payload, step=item.step, time=item.time)
            else:
                value = item.payload
                if item.kind == "image":
                    images = [Image(pixels) for pixels in item.payload]
                    value = images[0] if len(images) == 1 else images
                run.log({item.key: value}, step=item.step, time=item.time, repeat=True)
            count += 1
        except StepstoreError as exc:
            refused.add(item.key)
            problems.append((events.file_of(item.order), f"tag {item.key!r}: {exc}"))
    return count
