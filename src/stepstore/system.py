"""System metrics sampled beside training: CPU, memory, disk and network of the process and
the machine (psutil), and each GPU's utilisation, memory, temperature and power (NVML, when
``nvidia-ml-py`` is installed and a GPU answers).

A background thread takes a sample every ``interval`` seconds and hands each value to the
run as a scalar under ``system/``. System keys have their own steps, the sample number
(0, 1, 2, ...; a resumed run goes on from its last), and the wall time of the sample: plot
them against time. A last sample is taken when the run finishes. The training thread pays nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import InvalidArgumentError, MissingDependencyError, StepstoreError

_MB = 1024 * 1024
_GB = 1024 * _MB

#: (key, step, wall time in seconds, value) -> None
Emit = Callable[[str, int, float, float], None]


def check_interval(system: object) -> float | None:
    """Seconds between samples for ``init(system=...)``: True is 10 s, False/None is off."""
    if system is None or system is False:
        return None
    if system is True:
        return 10.0
    if isinstance(system, (int, float)) and not isinstance(system, bool) and system > 0:
        return float(system)
    raise InvalidArgumentError(
        f"system={system!r}: expected True, False or a number of seconds between samples (> 0)"
    )


class SystemSampler:
    """Samples system metrics on a thread until :meth:`stop`."""

    def __init__(self, emit: Emit, interval: float, first_step: int = 0, path: str = ".") -> None:
        try:
            import psutil
        except ImportError as exc:
            raise MissingDependencyError(
                f"system metrics need psutil, which cannot be imported ({exc}); install it "
                "with: pip install 'stepstore[system]'"
            ) from exc
        self._psutil = psutil
        self._emit = emit
        self._interval = interval
        self._step = first_step
        self._path = path
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # the first call only starts the measurement
        psutil.cpu_percent(None)
        self._counters = self._io_counters()
        self._gpus = _nvml_handles()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stepstore-system", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread and take a last sample (so a short run has one too)."""
        self._stopped.set()
        self._thread.join()
        with contextlib.suppress(StepstoreError):
            self.sample()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self.sample()
            except StepstoreError:  # the run's writer failed: it reports that itself
                return

    def sample(self) -> dict[str, float]:
        """Take one sample now and hand it to the run; returns it."""
        now = time.time()
        values = {**self._host(), **self._io(), **self._gpu()}
        for key, value in values.items():
            self._emit(key, self._step, now, value)
        self._step += 1
        return values

    def _host(self) -> dict[str, float]:
        psutil, process = self._psutil, self._process
        memory = psutil.virtual_memory()
        with process.oneshot():
            values = {
                "system/cpu/percent": psutil.cpu_percent(None),
                "system/memory/percent": memory.percent,
                "system/memory/used_gb": memory.used / _GB,
                "system/process/cpu_percent": process.cpu_percent(None),
                "system/process/rss_mb": process.memory_info().rss / _MB,
                "system/process/threads": float(process.num_threads()),
            }
        with contextlib.suppress(OSError):
            values["system/disk/percent"] = psutil.disk_usage(self._path).percent
        return values

    def _io_counters(self) -> tuple[float, Any, Any]:
        psutil = self._psutil
        return time.monotonic(), psutil.disk_io_counters(), psutil.net_io_counters()

    def _io(self) -> dict[str, float]:
        """Disk and network throughput since the last sample, in MB/s."""
        before, disk0, net0 = self._counters
        self._counters = now, disk1, net1 = self._io_counters()
        seconds = max(now - before, 1e-9)
        values = {}
        if disk0 is not None and disk1 is not None:
            values["system/disk/read_mb_s"] = (disk1.read_bytes - disk0.read_bytes) / _MB / seconds
            values["system/disk/write_mb_s"] = (
                (disk1.write_bytes - disk0.write_bytes) / _MB / seconds
            )
        if net0 is not None and net1 is not None:
            values["system/network/sent_mb_s"] = (net1.bytes_sent - net0.bytes_sent) / _MB / seconds
            values["system/network/recv_mb_s"] = (net1.bytes_recv - net0.bytes_recv) / _MB / seconds
        return values

    def _gpu(self) -> dict[str, float]:
        if not self._gpus:
            return {}
        import pynvml

        values = {}
        for index, handle in enumerate(self._gpus):
            prefix = f"system/gpu/{index}/"
            with contextlib.suppress(pynvml.NVMLError):
                rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
                values[prefix + "utilization"] = float(rates.gpu)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                values[prefix + "memory_percent"] = 100.0 * memory.used / memory.total
                values[prefix + "memory_used_gb"] = memory.used / _GB
                values[prefix + "temperature_c"] = float(
                    pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
                )
                values[prefix + "power_w"] = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        return values


def _nvml_handles() -> list[Any]:
    """A handle per GPU NVML sees; none without nvidia-ml-py or a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # noqa: BLE001 - no NVML library, no driver, no GPU: no GPU metrics
        return []
