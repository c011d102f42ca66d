"""A live progress line for hand-written training loops, drawn off the training thread.

A background thread reads the points ``log()`` has put in the run's journal since its last
look (host scalars; device scalars once the writer has resolved them) and redraws one line
every ``every`` seconds: epoch, step, steps per second and the latest values of the chosen
keys. When the epoch changes it prints a summary line of the epoch that ended. On a
terminal the line is a ``rich`` live display, with ``print`` output shown above it; in other
output (a log file, CI) only the epoch lines and a final line are printed. The training
thread pays nothing: it never calls into this module.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np

from .recording.journal import Journal
from .series.chunk import NO_EPOCH

#: Keys left out of the default choice: recorded beside training, not its progress.
_NOT_PROGRESS = ("system/", "activations/", "gradients/", "weights/")
_DEFAULT_KEYS = 6


class ProgressLine:
    """The live line of one run; :meth:`stop` prints the last line and ends the thread."""

    def __init__(
        self,
        name: str,
        journal: Journal,
        written: Callable[[], int],
        key_list: list[tuple[str, str]],
        resolved: dict[int, float],
        keys: Sequence[str] | None = None,
        every: float = 0.5,
        stream: TextIO | None = None,
    ) -> None:
        self._name = name
        self._journal = journal
        self._written = written
        self._key_list = key_list
        self._resolved = resolved
        self._keys = None if keys is None else list(keys)
        self._every = every
        self._stream = stream or sys.stdout
        self._seen = written()
        self._latest: dict[int, float] = {}
        self._step: int | None = None
        self._epoch: int | None = None
        #: (log time, step) of the current epoch's first and last points seen
        self._first: tuple[float, int] | None = None
        self._last: tuple[float, int] | None = None
        #: (log time, step) the live line's rate is measured from
        self._since: tuple[float, int] | None = None
        self._started = time.monotonic()
        self._live = _live_display(self._stream)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stepstore-console", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Read what is left, print the final line and end the display."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._thread.join()
        self._read()
        if self._epoch is not None:
            self._print(self._epoch_line(self._epoch))
        self._print(self._final_line())
        if self._live is not None:
            self._live.stop()

    def _loop(self) -> None:
        while not self._stopped.wait(self._every):
            self._read()
            if self._live is not None:
                from rich.text import Text

                line = Text(self._line(), no_wrap=True, overflow="ellipsis")
                self._live.update(line, refresh=True)

    def _read(self) -> None:
        """Take in the journal's points since the last look, epoch by epoch."""
        written = self._written()
        first = max(self._seen + 1, written + 1 - self._journal.capacity)
        records = self._journal.read(first, written + 1)
        self._seen = written
        records = records[records["seq"] == np.arange(first, written + 1)]  # torn: skipped
        self._latest.update(self._resolved)  # device scalars, as of the writer's last flush
        if not len(records):
            return
        epochs = records["epoch"]
        changes = np.flatnonzero(epochs[1:] != epochs[:-1]) + 1
        for part in np.split(records, changes):
            stored = int(part["epoch"][0])
            epoch = None if stored == NO_EPOCH else stored
            if epoch != self._epoch:
                if self._epoch is not None:
                    self._print(self._epoch_line(self._epoch))
                self._epoch, self._first = epoch, None
            self._take(part)

    def _take(self, records: np.ndarray) -> None:
        ids = records["key"]
        last = len(ids) - 1 - np.unique(ids[::-1], return_index=True)[1]
        for index in last:
            self._latest[int(ids[index])] = float(records["value"][index])
        step = max(int(records["step"].max()), self._step if self._step is not None else -1)
        self._step = step
        self._last = (float(records["time"][-1]), step)
        if self._first is None:
            self._first = (float(records["time"][0]), int(records["step"][0]))
        if self._since is None or self._last[0] - self._since[0] > 2:
            self._since = self._last

    def _shown(self) -> list[tuple[str, float]]:
        names = {key_id: key for key_id, (key, kind) in enumerate(list(self._key_list))}
        if self._keys is not None:
            ids = {key: key_id for key_id, key in names.items()}
            return [(k, self._latest[ids[k]]) for k in self._keys if ids.get(k) in self._latest]
        chosen = [
            (names[key_id], value)
            for key_id, value in sorted(self._latest.items())
            if key_id in names and not names[key_id].startswith(_NOT_PROGRESS)
        ]
        return chosen[:_DEFAULT_KEYS]

    def _values(self) -> str:
        return "".join(f" · {key} {_number(value)}" for key, value in self._shown())

    def _line(self) -> str:
        rate = _rate(self._since, self._last) or _rate(self._first, self._last)
        epoch = "" if self._epoch is None else f"epoch {self._epoch} · "
        step = "-" if self._step is None else f"{self._step:,}"
        return f"{self._name} ▸ {epoch}step {step} · {rate:,.1f} it/s{self._values()}"

    def _epoch_line(self, epoch: int) -> str:
        first, last = self._first, self._last
        steps = 0 if first is None or last is None else last[1] - first[1] + 1
        seconds = 0.0 if first is None or last is None else last[0] - first[0]
        return (
            f"{self._name} ▸ epoch {epoch}: {steps:,} steps in {seconds:.1f} s "
            f"({_rate(first, last):,.1f} it/s){self._values()}"
        )

    def _final_line(self) -> str:
        seconds = time.monotonic() - self._started
        step = "-" if self._step is None else f"{self._step:,}"
        return f"{self._name} ▸ done: last step {step} after {seconds:.1f} s{self._values()}"

    def _print(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self._stream, flush=True)


def _live_display(stream: TextIO) -> Any:
    """A started ``rich`` live display on a terminal; None for other output."""
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    from rich.console import Console
    from rich.live import Live

    live = Live(
        console=Console(file=stream),
        auto_refresh=False,
        transient=True,
        redirect_stdout=True,
        redirect_stderr=True,
    )
    live.start()
    return live


def _rate(since: tuple[float, int] | None, until: tuple[float, int] | None) -> float:
    """Steps per second between two (log time, step) marks; 0 when unknown."""
    if since is None or until is None or until[0] <= since[0]:
        return 0.0
    return (until[1] - since[1]) / (until[0] - since[0])


def _number(value: float) -> str:
    return f"{value:.4g}"
