"""The typed messages the recording threads pass one way: training thread -> array writer
-> scalar writer -> store.

Array jobs carry what one logged value needs to be written (and its size in bytes, which
bounds the array writer's queue); :class:`DeviceValue` is a scalar the scalar writer
resolves and merges in log order; :class:`DerivedScalar` is a scalar computed off the
training thread (tensor statistics, system metrics) for the scalar writer to record.
"""

from __future__ import annotations

from typing import Any, BinaryIO, NamedTuple

import numpy as np

from ..tensors.reduce import Reduction
from ..tensors.staging import Staged


class TensorJob(NamedTuple):
    """A tensor staged by ``log()``, to store raw or reduced as ``reduction`` says."""

    key: str
    step: int
    epoch: int
    time: float
    staged: Staged
    reduction: Reduction
    nbytes: int


class ImageJob(NamedTuple):
    """The images of one key at one step: (pixels, caption) pairs."""

    key: str
    step: int
    epoch: int
    time: float
    images: list[tuple[np.ndarray, str | None]]
    nbytes: int


class RecordJob(NamedTuple):
    """A JSON record, already serialised."""

    key: str
    step: int
    epoch: int
    time: float
    data: str
    nbytes: int


class ArtifactJob(NamedTuple):
    """A file to copy into the run's artifacts under ``key`` (its name), read from the open
    ``source`` the job owns and closes."""

    key: str
    source: BinaryIO
    nbytes: int


#: Everything the array writer is asked to do.
ArrayJob = TensorJob | ImageJob | RecordJob | ArtifactJob


class DeviceValue(NamedTuple):
    """A scalar for the scalar writer to resolve (a device tensor, or a derived float).

    ``order`` = 2 * journal seq + 1 places it after the host records logged before it."""

    order: int
    key_id: int
    step: int
    epoch: int
    time: float
    value: Any


class DerivedScalar(NamedTuple):
    """A scalar computed beside training (tensor statistics, system metrics) for the
    scalar writer to record under ``key``, registered as a scalar key if new."""

    key: str
    step: int
    epoch: int
    time: float
    value: float
