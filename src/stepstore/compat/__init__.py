"""Drop-in APIs: scripts written for TensorBoard or MLflow record into stepstore by changing
one import.

- :mod:`stepstore.compat.tensorboard`: ``SummaryWriter`` with the signatures of
  ``torch.utils.tensorboard.SummaryWriter``.
- :mod:`stepstore.compat.mlflow`: MLflow's fluent API (``start_run``, ``log_metric``, ...).

Neither imports torch, tensorboard or mlflow. A call that stepstore cannot honour raises
:class:`~stepstore.errors.UnsupportedError` naming what to use instead; nothing is dropped
silently.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgumentError, UnsupportedError


def step_of(call: str, step: Any) -> int:
    """The step a call records at: ``step`` as an int, 0 when None (as both tools do)."""
    if step is None:
        return 0
    if isinstance(step, bool) or not hasattr(step, "__int__"):
        raise InvalidArgumentError(
            f"{call}: step {step!r}: expected a non-negative integer, got {type(step).__name__}"
        )
    number = int(step)
    if number != step:
        raise InvalidArgumentError(f"{call}: step {step!r}: expected a whole number")
    return number


def unsupported(call: str, instead: str) -> UnsupportedError:
    """The error for ``call``, which stepstore cannot honour; ``instead`` says what to do."""
    return UnsupportedError(f"{call} is not supported by stepstore: {instead}")
