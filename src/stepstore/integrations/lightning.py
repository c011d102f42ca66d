"""Lightning: record a ``Trainer`` into a run with one logger.

::

    import lightning.pytorch as pl
    import stepstore as ss

    trainer = pl.Trainer(max_epochs=3, logger=ss.lightning.Logger(project="digits"))
    trainer.fit(model, train_loader, val_loader)

What it records:

- Metrics (``self.log(...)`` in the module) at the step Lightning gives loggers, the
  trainer's count of optimizer steps taken (``trainer.global_step`` for one optimizer),
  so with ``log_every_n_steps=1`` the values of the batch that made update ``k`` record at
  step ``k - 1``: steps 0..N-1 for N updates, as every Lightning logger shows them. The
  validation at the end of an epoch inside ``fit`` records at the step of the epoch's last
  training batch; ``validate()`` and ``test()`` after ``fit`` at N. The ``epoch`` Lightning
  adds to each call becomes the points' epoch, not a key. A key logged again at its last
  step (``validate()`` twice) records a second value there rather than raising.
- Hyper-parameters (``save_hyperparameters()``, or ``log_hyperparams`` with a nested
  dict, an ``argparse.Namespace`` or a dataclass) as the run's params. The logger starts
  its run when Lightning first calls it, which is ``log_hyperparams`` at the start of
  ``fit``, so they are the params the run starts with; any that arrive later, or for a run
  given with ``run=``, go to the record ``params``.
- With ``log_model=True``: each checkpoint a ``ModelCheckpoint`` saves, as an artifact
  named after its file (``last.ckpt`` saved again replaces the stored one).

The run: with ``run=None`` the logger starts one from ``init_kwargs`` and finishes it when
Lightning finalizes the logger, ``"success"`` as ``finished`` and ``"failed"`` (an exception,
Ctrl+C) as ``crashed``; a later ``trainer.test()`` resumes it. A run given with ``run=`` is
never finished. Ranks: the logger does what ``stepstore.init`` does in a distributed job,
so by default rank 0 records and the other ranks' calls do nothing, and with
``ranks="all"`` every rank records its own points into the shared run (checkpoints only
from rank 0). The run is ``logger.run``; there is no ``experiment`` attribute, whose lookup
in Lightning's setup would start the run before the hyper-parameters arrive.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any

from ..backends.base import RUN_STATUSES
from ..recording.names import new_name
from ..recording.run import Run
from .adapter import RunHolder, plain
from .requires import missing

try:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import Logger as _LightningLogger
except ImportError as exc:
    raise missing("lightning", "lightning", exc) from exc

__all__ = ["STATUSES", "Logger"]

#: Run status for each status Lightning finalizes a logger with; stepstore's own statuses
#: are taken as they are, and anything else records ``incomplete``.
STATUSES = {"success": "finished", "finished": "finished", "failed": "crashed"}


class Logger(_LightningLogger):
    """A Lightning logger recording metrics, hyper-parameters and checkpoints into a run.

    What it records, at which steps, and when it finishes the run, is described in the
    module documentation.
    """

    def __init__(
        self,
        run: Run | None = None,
        *,
        log_model: bool = False,
        save_dir: str | os.PathLike[str] | None = None,
        **init_kwargs: Any,
    ) -> None:
        """Check the arguments; the run is started when Lightning first calls the logger.

        Args:
            run: An open run to record into; the logger never finishes it.
            log_model: Store each checkpoint a ``ModelCheckpoint`` saves as an artifact.
            save_dir: Where Lightning puts checkpoints (``save_dir/name/version``);
                ``None`` leaves it to the trainer's ``default_root_dir``.
            **init_kwargs: ``stepstore.init``'s arguments (``project``, ``name``,
                ``params``, ``tags``, ``store``, ``ranks``, ...) for a run the logger
                starts. Without ``name`` the logger picks the run's name now, as
                Lightning asks for the ``version`` before the run starts.

        Raises:
            InvalidArgumentError: An argument is not acceptable.
        """
        super().__init__()
        if run is None and "name" not in init_kwargs and "resume" not in init_kwargs:
            init_kwargs["name"] = new_name(secrets.token_hex(8))
        self._holder = RunHolder("stepstore.lightning.Logger", run, init_kwargs)
        self._project = run.project if run is not None else init_kwargs.get("project")
        self._run_name = run.name if run is not None else init_kwargs.get("name")
        self._log_model = log_model
        self._save_dir = None if save_dir is None else os.fspath(save_dir)
        self._saved: dict[str, tuple[int, int]] = {}

    @property
    def run(self) -> Run:
        """The run being recorded into, started now if it has not been yet (a finished one
        is resumed only when the logger records again)."""
        return self._holder.current or self._holder.get()

    @property
    def name(self) -> str | None:
        """The project (Lightning's experiment name)."""
        return self._project

    @property
    def version(self) -> str:
        """The run's name."""
        return self._run_name or self.run.name

    @property
    def save_dir(self) -> str | None:
        """The directory given as ``save_dir``, or ``None``."""
        return self._save_dir

    @property
    def root_dir(self) -> str | None:
        """``save_dir/name``, or ``None`` without a ``save_dir``."""
        if self._save_dir is None:
            return None
        return os.path.join(self._save_dir, str(self.name))

    @property
    def log_dir(self) -> str | None:
        """``save_dir/name/version``, or ``None`` without a ``save_dir``."""
        root = self.root_dir
        return None if root is None else os.path.join(root, self.version)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Record hyper-parameters: the params of a run started now, else the record
        ``params``. Values JSON cannot hold are stored as their ``str()``."""
        values = plain(params)
        if not isinstance(values, dict):
            values = {"hparams": values}
        self._holder.get(values)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record scalar metrics at ``step``, with the ``epoch`` among them as the epoch."""
        values = dict(metrics)
        epoch = values.pop("epoch", None)
        if values:
            self._holder.get().log(
                values, step=step, epoch=None if epoch is None else int(epoch), repeat=True
            )

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """With ``log_model=True``, store the checkpoint files that are new or changed."""
        if not self._log_model:
            return
        run = self._holder.get()
        if run.rank != 0:
            return
        paths = {
            checkpoint_callback.last_model_path,
            checkpoint_callback.best_model_path,
            *checkpoint_callback.best_k_models,
        }
        logged = False
        for path in sorted(str(p) for p in paths if p):
            if not os.path.isfile(path):
                continue
            info = os.stat(path)
            mark = (info.st_mtime_ns, info.st_size)
            if self._saved.get(path) != mark:
                run.log_artifact(path)
                self._saved[path] = mark
                logged = True
        if logged:
            run.flush()  # copied before Lightning rewrites a file in place (last.ckpt)

    def finalize(self, status: str) -> None:
        """Finish a run the logger started, with the status :data:`STATUSES` maps to."""
        own = status in RUN_STATUSES and status != "running"
        self._holder.finish(STATUSES.get(status, status if own else "incomplete"))
