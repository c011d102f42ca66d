"""Hugging Face Transformers: record a ``Trainer`` into a run with one callback.

::

    import stepstore as ss
    from transformers import Trainer

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test,
                      callbacks=[ss.hf.Callback(project="sst2")])
    trainer.train()

What it records:

- Every ``Trainer.log`` call at ``step`` = ``state.global_step``, the number of optimizer
  updates done, so with ``logging_steps=1`` the updates of a run of N record at steps
  1..N. Keys: the training values under their names (``loss``, ``grad_norm``,
  ``learning_rate``); ``eval_*`` as ``eval/*``, ``test_*`` as ``test/*`` and the end of
  training's ``train_*`` summary as ``train/*``. The fractional ``epoch`` the trainer adds
  becomes the points' epoch, 0-based: the epoch the last update belongs to (an
  evaluation at the end of the first epoch has epoch 0). A key logged again at its last
  step (``trainer.evaluate()`` right after ``train()``) records a second value there.
  Values that are not numbers or arrays (a string a ``compute_metrics`` returns) are
  skipped with a warning.
- Params of a run the callback starts: ``training_args`` (``TrainingArguments.to_dict()``)
  and ``model_config`` (the model's ``config.to_dict()``), next to ``params=``; for a run
  given with ``run=`` they go to the record ``params``.

The run: with ``run=None`` the callback starts one from ``init_kwargs`` when the trainer
first calls it and finishes it ``finished`` at the end of ``train()``; a later
``evaluate()`` or ``train()`` resumes it. The trainer calls no callback when training
raises: use the callback as a context manager to record ``crashed`` then; otherwise the run
ends ``incomplete`` when the process exits. A run given with ``run=`` is never finished. In
a distributed job the callback does what ``stepstore.init`` does (rank 0 records unless
``ranks="all"``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from ..recording.run import Run
from .adapter import HeldRun, RunHolder, plain
from .requires import missing

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:
    raise missing("transformers", "hf", exc) from exc

__all__ = ["PREFIXES", "Callback"]

#: How the trainer's key prefixes become stepstore's.
PREFIXES = {"eval_": "eval/", "test_": "test/", "train_": "train/"}


class Callback(HeldRun, TrainerCallback):
    """A ``TrainerCallback`` recording the trainer's logs, arguments and model config.

    What it records, at which steps, and when it finishes the run, is described in the
    module documentation.
    """

    def __init__(self, run: Run | None = None, **init_kwargs: Any) -> None:
        """Check the arguments; the run is started when the trainer first calls the callback.

        Args:
            run: An open run to record into; the callback never finishes it.
            **init_kwargs: ``stepstore.init``'s arguments (``project``, ``name``,
                ``params``, ``tags``, ``store``, ...) for a run the callback starts.

        Raises:
            InvalidArgumentError: An argument is not acceptable.
        """
        self._holder = RunHolder("stepstore.hf.Callback", run, init_kwargs)
        self._described: str | None = None
        self._skipped: set[str] = set()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Start (or resume) the run with the training arguments and model config."""
        self._run(args, kwargs.get("model"))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record the logged values at the global step and epoch."""
        if not logs:
            return
        run = self._run(args, kwargs.get("model"))
        values = {}
        for key, value in logs.items():
            if key == "epoch":
                continue
            if value is None or isinstance(value, str):
                self._skip(key, value)
                continue
            values[_key(key)] = value
        epoch = None if state.epoch is None else max(math.ceil(state.epoch) - 1, 0)
        if values:
            run.log(values, step=state.global_step, epoch=epoch, repeat=True)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Finish the run as ``finished`` if the callback started it."""
        self._holder.finish("finished")

    def _run(self, args: TrainingArguments, model: Any) -> Run:
        """The open run, started, resumed or given the params first if it needs them."""
        run = self._holder.current
        if run is not None and run.status == "running" and self._described == run.id:
            return run
        params: dict[str, Any] = {"training_args": plain(args.to_dict())}
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            params["model_config"] = plain(config.to_dict())
        run = self._holder.get(params)
        self._described = run.id
        return run

    def _skip(self, key: str, value: Any) -> None:
        if key not in self._skipped:
            self._skipped.add(key)
            warnings.warn(
                f"stepstore.hf.Callback: log {key!r} = {value!r:.60} is not a number or an "
                "array; it is not recorded",
                RuntimeWarning,
                stacklevel=2,
            )


def _key(name: str) -> str:
    """The trainer's log name as a stepstore key (``eval_loss`` -> ``eval/loss``)."""
    for prefix, replacement in PREFIXES.items():
        if name.startswith(prefix):
            return replacement + name[len(prefix) :]
    return name
