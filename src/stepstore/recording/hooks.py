"""Process hooks that end open runs when the process ends: normal exit (``incomplete``),
SIGTERM (``killed``), an uncaught exception (``crashed``; Ctrl-C ``killed``), and a fork
(the child's copies of the parent's runs stop recording)."""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - see the registration at the bottom
import os
import signal
import sys
import threading
import warnings
import weakref
from typing import Any, Protocol


class Finishable(Protocol):
    """What the hooks need of a run."""

    @property
    def id(self) -> str: ...

    def finish(self, status: str = "finished") -> None: ...

    def detach(self) -> None: ...

    def _crashed(self, error: BaseException) -> None: ...


_live_runs: weakref.WeakSet[Finishable] = weakref.WeakSet()


def track(run: Finishable) -> None:
    """Finish ``run`` when the process ends (until :func:`untrack`), installing the
    uncaught-exception and SIGTERM hooks on first use."""
    _install_handlers()
    _live_runs.add(run)


def untrack(run: Finishable) -> None:
    """Stop finishing ``run`` at exit (it finished)."""
    _live_runs.discard(run)


def _finish_all(status: str, error: BaseException | None = None) -> None:
    for run in list(_live_runs):
        try:
            if error is not None:
                run._crashed(error)
            run.finish(status)
        except Exception as exc:  # noqa: BLE001 - exiting: report and go on
            warnings.warn(
                f"stepstore: could not finish run {run.id} at exit: {exc}",
                RuntimeWarning,
                stacklevel=1,
            )


def _finish_at_exit() -> None:
    _finish_all("incomplete")


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (preemption, ``kill``): flush every open run, mark it ``killed``, then exit
    with the signal's usual status."""
    _finish_all("killed")
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _on_uncaught(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    """An exception nobody caught ends the program: open runs keep the flight recorders
    that fire on it and are ``crashed`` (``killed`` for Ctrl-C), not ``incomplete``; then
    the previous hook reports it as usual."""
    _finish_all("killed" if issubclass(kind, KeyboardInterrupt) else "crashed", error)
    _previous_excepthook(kind, error, tb)


_previous_excepthook = sys.excepthook


def _install_handlers() -> None:
    """Hook uncaught exceptions (chaining the hook in place), and take SIGTERM if nobody
    else has (main thread only); a user's SIGTERM handler is left alone."""
    global _previous_excepthook
    if sys.excepthook is not _on_uncaught:
        _previous_excepthook, sys.excepthook = sys.excepthook, _on_uncaught
    if threading.current_thread() is threading.main_thread() and signal.getsignal(
        signal.SIGTERM
    ) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)


def _detach_in_child() -> None:
    for run in list(_live_runs):
        run.detach()
    _live_runs.clear()


atexit.register(_finish_at_exit)
# Also before concurrent.futures shuts its executors down (fsspec object stores need them):
# its hook is registered when it is imported, and these hooks run last-registered first.
threading._register_atexit(_finish_at_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_detach_in_child)
