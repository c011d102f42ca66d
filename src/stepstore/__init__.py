"""stepstore: record every iteration of neural-network training, and get it back fast.

>>> import stepstore as ss
>>> run = ss.init(project="digits", params={"lr": 1e-3})          # doctest: +SKIP
>>> run.log({"loss": 0.7, "acc": 0.5}, epoch=0)                    # doctest: +SKIP
>>> run.finish()                                                   # doctest: +SKIP
>>> ss.open().run(run.id).scalars("loss")                          # doctest: +SKIP
"""

from __future__ import annotations

import importlib

from .errors import (
    FilterSyntaxError,
    InvalidArgumentError,
    InvalidValueError,
    KindMismatchError,
    MissingDependencyError,
    NotAStoreError,
    NotFoundError,
    RunStateError,
    SchemaVersionError,
    StepOrderError,
    StepstoreError,
    StoreError,
    StoreUnavailableError,
    UnknownSchemeError,
    UnsupportedError,
    WriterError,
)
from .io.copy import copy
from .policies import (
    Policy,
    at,
    every,
    every_epoch,
    first,
    log_spaced,
    on_change,
    on_exception,
    on_nan,
    window,
)
from .query import RunView, Store, open  # noqa: A004 - the documented API name
from .recording.run import Run
from .recording.start import init
from .tensors.images import Image, image_grid
from .tensors.series import TensorSeries

__version__ = "0.5.0"


#: The framework integrations, each imported on first use so its framework stays optional.
_INTEGRATIONS = ("torch", "keras", "lightning", "hf")


def __getattr__(name: str) -> object:
    """``stepstore.torch``, ``.keras``, ``.lightning``, ``.hf``: the integration
    modules, imported on first use (a missing framework raises MissingDependencyError)."""
    if name in _INTEGRATIONS:
        return importlib.import_module(f".integrations.{name}", __name__)
    raise AttributeError(f"module 'stepstore' has no attribute {name!r}")


__all__ = [
    "FilterSyntaxError",
    "Image",
    "InvalidArgumentError",
    "InvalidValueError",
    "KindMismatchError",
    "MissingDependencyError",
    "NotAStoreError",
    "NotFoundError",
    "Policy",
    "Run",
    "RunStateError",
    "RunView",
    "SchemaVersionError",
    "StepOrderError",
    "StepstoreError",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "TensorSeries",
    "UnknownSchemeError",
    "UnsupportedError",
    "WriterError",
    "__version__",
    "at",
    "copy",
    "every",
    "every_epoch",
    "first",
    "image_grid",
    "init",
    "log_spaced",
    "on_change",
    "on_exception",
    "on_nan",
    "open",
    "window",
]
