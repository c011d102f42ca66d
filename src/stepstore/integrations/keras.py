"""Keras 3: record ``model.fit`` into a run with one callback.

::

    import stepstore as ss

    model.fit(x, y, epochs=3, validation_split=0.2,
              callbacks=[ss.keras.Callback(project="digits", params={"batch_size": 32})])

What it records:

- Per batch: the values Keras logs (``loss``, the compiled metrics under their Keras names)
  at ``step`` = the optimizer's iteration count after the batch's update, so the first
  batch of a fresh model records at step 1 and a fit of N batches at steps 1..N; the epoch
  is Keras's 0-based epoch. ``log_every=N`` keeps the steps divisible by N,
  ``log_every="epoch"`` none.
- Per epoch: the epoch's training values as ``epoch/<name>`` and the validation values
  (Keras's ``val_loss``) as ``val/<name>``, at the step of the epoch's last batch.
- Metrics that are not scalars (``keras.metrics.F1Score(average=None)`` gives one value
  per class) as tensor series under the same keys.
- Params of a run the callback starts: ``fit`` (``epochs``, ``steps_per_epoch``: Keras
  tells callbacks nothing else of ``fit``'s arguments, so pass the batch size in
  ``params=``) and ``optimizer`` (its class and ``get_config()``), next to ``params=``.
  A run given with ``run=`` has its params already; these then go to the record
  ``params`` (see :mod:`stepstore.integrations.adapter`).
- The record ``model/summary``: the text of ``model.summary()`` and the parameter counts.
- With ``watch=`` (a capture policy, e.g. ``ss.every(100)``): every weight variable as the
  tensor series ``weights/<variable path>`` (``weights/sequential/dense/kernel``) at the
  batch steps the policy accepts. Keras layers are not torch submodules on the torch
  backend, so :func:`stepstore.torch.watch` would see only the model's output; this works
  on every backend instead.

The run: with ``run=None`` the callback starts one from ``init_kwargs`` when training
begins and finishes it ``finished`` when ``fit`` returns; a later ``fit`` with the same
callback resumes it (the optimizer's iteration count goes on, so do the steps). Keras calls
no callback when ``fit`` raises: use the callback as a context manager (``with
ss.keras.Callback(...) as cb: model.fit(..., callbacks=[cb])``) to record ``crashed``;
otherwise the run ends ``incomplete`` when the process exits. A run given with ``run=`` is
never finished by the callback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidArgumentError
from ..policies import Policy
from ..recording.keys import KeyState
from ..recording.run import Run
from .adapter import HeldRun, RunHolder, plain
from .requires import missing

try:
    import keras
except ImportError as exc:
    raise missing("keras", "keras", exc) from exc

__all__ = ["Callback"]


class Callback(HeldRun, keras.callbacks.Callback):
    """A Keras callback recording ``fit``'s logs, params and model summary into a run.

    What it records, at which steps, and when it finishes the run, is described in the
    module documentation.
    """

    def __init__(
        self,
        run: Run | None = None,
        log_every: str | int = "batch",
        watch: Policy | None = None,
        **init_kwargs: Any,
    ) -> None:
        """Check the arguments; the run is started (or the given one used) when ``fit`` begins.

        Args:
            run: An open run to record into; the callback never finishes it.
            log_every: ``"batch"`` (every batch), ``"epoch"`` (epoch values only) or an
                integer N (batch values at steps divisible by N).
            watch: A capture policy choosing the batch steps at which every weight is
                recorded as a tensor; ``None`` records none.
            **init_kwargs: ``stepstore.init``'s arguments (``project``, ``name``,
                ``params``, ``tags``, ``store``, ...) for a run the callback starts.

        Raises:
            InvalidArgumentError: An argument is not acceptable.
        """
        super().__init__()
        self._holder = RunHolder("stepstore.keras.Callback", run, init_kwargs)
        self._every = _check_every(log_every)
        if watch is not None and (not isinstance(watch, Policy) or watch.triggers):
            raise InvalidArgumentError(
                f"watch={watch!r}: expected a capture policy such as stepstore.every(100) "
                "that needs no other key's value, or None"
            )
        self._watch = None if watch is None else watch.compile({})
        self._watched = KeyState(-1, "weights", "tensor")
        self._epoch: int | None = None
        self._summarised: str | None = None

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Start (or resume) the run with ``fit``'s and the optimizer's params; record the
        model summary once per run."""
        model = self.model
        optimizer = model.optimizer
        fit = self.params or {}
        params = {
            "fit": {"epochs": fit.get("epochs"), "steps_per_epoch": fit.get("steps")},
            "optimizer": {"class": type(optimizer).__name__, **optimizer.get_config()},
        }
        run = self._holder.get(plain(params))
        if self._summarised != run.id:
            run.log_record("model/summary", _summary(model), step=self._iterations())
            self._summarised = run.id

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Note the epoch the next batches belong to."""
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Record the batch's values (as ``log_every`` says) and the watched weights."""
        run = self._holder.current
        every = self._every
        if run is None or (not every and self._watch is None):
            return
        step = self._iterations()
        if every and logs and step % every == 0:
            run.log(logs, step=step, epoch=self._epoch)
        if self._watch is not None and self._watch(step, self._epoch, self._watched):
            self._watched.last_step, self._watched.last_epoch = step, self._epoch
            self._watched.count += 1
            run.log(_weights(self.model), step=step, epoch=self._epoch)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Record the epoch's training values as ``epoch/...`` and validation ones as
        ``val/...`` at the step of the epoch's last batch."""
        run = self._holder.current
        if run is None or not logs:
            return
        values = {
            f"val/{key[4:]}" if key.startswith("val_") else f"epoch/{key}": value
            for key, value in logs.items()
        }
        run.log(values, step=self._iterations(), epoch=epoch)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Finish the run as ``finished`` if the callback started it."""
        self._holder.finish("finished")

    def _iterations(self) -> int:
        """The optimizer's iteration count: the number of updates done so far."""
        return int(self.model.optimizer.iterations)


def _check_every(log_every: Any) -> int:
    """``log_every`` as a step divisor; 0 for ``"epoch"`` (no batch values)."""
    if log_every == "batch":
        return 1
    if log_every == "epoch":
        return 0
    if isinstance(log_every, int) and not isinstance(log_every, bool) and log_every >= 1:
        return log_every
    raise InvalidArgumentError(
        f"log_every={log_every!r}: expected 'batch', 'epoch' or a positive integer"
    )


def _weights(model: keras.Model) -> dict[str, Any]:
    """Every weight variable of ``model`` by ``weights/<path>``: torch tensors as they are
    (the run copies them off the training thread), other backends' arrays as NumPy."""
    on_torch = keras.backend.backend() == "torch"
    return {
        f"weights/{variable.path}": (
            variable.value.detach() if on_torch else keras.ops.convert_to_numpy(variable.value)
        )
        for variable in model.weights
    }


def _summary(model: keras.Model) -> dict[str, Any]:
    """``model.summary()`` as a record: its text and parameter counts."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    total = model.count_params()
    return {
        "text": "\n".join(lines),
        "total_params": total,
        "trainable_params": trainable,
        "non_trainable_params": total - trainable,
        "layers": [
            {"name": layer.name, "class": type(layer).__name__, "params": layer.count_params()}
            for layer in model.layers
        ],
    }
