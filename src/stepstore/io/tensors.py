"""Export runs' tensor series as NumPy ``.npy`` files or as Zarr v3 stores.

``npy``: one file per key and step, ``DIR/RUN_ID/KEY/STEP.npy`` (what ``np.save`` per layer
per step would have written), each holding the tensor as logged (its dtype and shape).

``zarr``: one Zarr v3 store per run, ``DIR/RUN_ID``, a group with attributes ``run_id``,
``run`` and ``project``; in it a group per key (attribute ``key``) holding ``values`` (the
tensors stacked, steps on axis 0, zstd-compressed) and ``steps`` (int64, the step of each
row). A key whose tensors changed shape during the run does not fit one array: it is refused
before anything is written (export it as ``npy``). bfloat16 values are stored as their raw
16-bit patterns (uint16) with the array attribute ``dtype: bfloat16``.

In both, ``RUN_ID`` and ``KEY`` are path components made by
:func:`stepstore.tensors.paths.path_name` (``a/b`` becomes ``a%2Fb``; never ``..``); the
export covers rank 0, and where several tensors were logged at one step the last one counts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InvalidArgumentError
from ..query.views import RunView
from ..tensors.dtypes import dtype_name, storage_dtype
from ..tensors.paths import path_name
from ..tensors.series import TensorSeries
from ..tensors.zarr_v3 import STEPS_CHUNK, array_document, chunk_key, group_document
from .export import check_keys, check_runs
from .select import check_directory, matching, plan_keys

#: The formats :func:`export_tensors` writes.
TENSOR_FORMATS = ("npy", "zarr")
#: Bytes of tensor data per chunk of a ``values`` array (at least one step per chunk).
CHUNK_BYTES = 8 << 20


def export_tensors(
    runs: Sequence[RunView],
    directory: str | os.PathLike[str],
    format: str,  # noqa: A002 - mirrors the CLI's --format
    keys: str | Sequence[str] | None = None,
) -> int:
    """Write the runs' tensor series under ``directory`` in ``format`` (``npy`` or ``zarr``,
    see the module docstring); the directory is created if missing.

    Args:
        runs: The runs to export; runs without a chosen tensor key get nothing.
        directory: Where to write; its parent must exist.
        format: ``npy`` or ``zarr``.
        keys: A tensor key, a glob or a list of them; every tensor key if None. Each must
            match a tensor key of at least one run.

    Returns:
        The number of tensors (key and step pairs) written.

    Raises:
        InvalidArgumentError: An argument is not acceptable, or (``zarr``) a key changed
            shape during its run.
        NotFoundError: No run has a tensor key, or a pattern matches none.
    """
    if format not in TENSOR_FORMATS:
        raise InvalidArgumentError(
            f"format={format!r}: expected one of {', '.join(TENSOR_FORMATS)}"
        )
    chosen = _choose(runs, keys)
    series = [[view.tensor(key) for key in names] for view, names in chosen]
    series = [[tensors for tensors in found if len(tensors)] for found in series]
    if format == "zarr":
        for (view, _), found in zip(chosen, series, strict=True):
            for tensors in found:
                _check_one_shape(view, tensors)
    root = check_directory(directory)
    written = 0
    for (view, _), found in zip(chosen, series, strict=True):
        run_dir = root / path_name(view.id)
        if format == "npy":
            written += sum(_write_npy(run_dir, tensors) for tensors in found)
        else:
            written += _write_zarr(run_dir, view, found)
    return written


def _choose(
    runs: Sequence[RunView], keys: str | Sequence[str] | None
) -> list[tuple[RunView, list[str]]]:
    """Each run with tensor keys among ``keys``, and those keys."""
    plan = plan_keys(check_runs(runs), "tensor", check_keys(keys), None)
    return [(view, matching(view.keys("tensor"), present)) for view, present in plan]


def _steps(tensors: TensorSeries) -> np.ndarray:
    """The recorded steps, sorted, once each."""
    return np.unique(tensors.steps)


def _write_npy(run_dir: Path, tensors: TensorSeries) -> int:
    key_dir = run_dir / path_name(tensors.key)
    key_dir.mkdir(parents=True, exist_ok=True)
    steps = _steps(tensors)
    for step in steps.tolist():
        np.save(key_dir / f"{step}.npy", tensors.at(step), allow_pickle=False)
    return len(steps)


def _check_one_shape(view: RunView, tensors: TensorSeries) -> None:
    shape = tensors.shape
    if None in shape:
        raise InvalidArgumentError(
            f"tensor {tensors.key!r} of run {view.name} ({view.id}) changed shape during the "
            f"run {shape[1:]}; a Zarr array holds one shape: export it with --format npy"
        )


def _write_zarr(run_dir: Path, view: RunView, found: list[TensorSeries]) -> int:
    run_dir.mkdir(exist_ok=True)
    attributes = {"run_id": view.id, "run": view.name, "project": view.project}
    (run_dir / "zarr.json").write_bytes(group_document(attributes))
    return sum(_write_zarr_key(run_dir / path_name(t.key), t) for t in found)


def _write_zarr_key(group: Path, tensors: TensorSeries) -> int:
    """One key's group: ``values`` and ``steps`` arrays; returns the steps written."""
    group.mkdir(exist_ok=True)
    (group / "zarr.json").write_bytes(group_document({"key": tensors.key}))
    steps = _steps(tensors)
    name = dtype_name(tensors.dtype, tensors.key)
    stored = storage_dtype(name)
    shape = tuple(int(d) for d in tensors.shape[1:] if d is not None)
    rows = max(1, CHUNK_BYTES // max(1, stored.itemsize * int(np.prod(shape, dtype=np.int64))))
    extra = {"dtype": "bfloat16"} if name == "bfloat16" else {}
    values = group / "values"
    _write_file(
        values / "zarr.json",
        array_document((len(steps), *shape), (rows, *shape), name, True, extra),
    )
    from numcodecs import Zstd

    codec = Zstd(level=1)
    for number, start in enumerate(range(0, len(steps), rows)):
        block = np.zeros((rows, *shape), stored)
        part = tensors[steps[start : start + rows].tolist()]
        block[: len(part)] = np.ascontiguousarray(part).view(stored)
        _write_file(values / chunk_key(number, len(shape) + 1), bytes(codec.encode(block)))
    index = group / "steps"
    _write_file(index / "zarr.json", array_document((len(steps),), (STEPS_CHUNK,), "int64", False))
    for number, start in enumerate(range(0, len(steps), STEPS_CHUNK)):
        block = np.zeros(STEPS_CHUNK, "<i8")
        part = steps[start : start + STEPS_CHUNK]
        block[: len(part)] = part
        _write_file(index / chunk_key(number, 1), block.tobytes())
    return len(steps)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
