"""Flight recorder: what holding every activation and gradient of the last 32 steps in a ring
adds to a training step of the demo CNN, and what persisting a full ring costs.

    python benchmarks/bench_flight.py            # full run (about 2 minutes on 2 cores)
    python benchmarks/bench_flight.py --quick    # fewer steps and repeats (under a minute)

The demo CNN (``stepstore.demo.build_model``, batch 32 of 1x8x8 images, Adam, one CPU
thread) trains twice in one process, each copy logging its loss into its own run at every
step: one without a watch and one with ``watch(run, model, what=("activations",
"gradients"), flight=32)``, step by step in turn (which goes first alternates), so that the
load of a shared machine falls on both alike. Each repeat compares the median time of a step
with/without, in wall time and in CPU time of the training thread (which the ring's copies
and hooks all run on); the overhead is the median over repeats; the target is at most 5 %.
Persisting a
full ring is timed through the run, as a trigger firing does it: the drain alone (one copy
of each key's 32 slots, in step order), ``run.dump_flight`` (drain, order the writes, queue
them on the run's tensor path, store the event: what the training thread waits for), and the
flush until every write is stored. A last figure times one ring ``put`` of
an activation-sized tensor. Prints markdown and writes ``benchmarks/results/flight.md`` and
``flight.json`` (``flight.quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, median, num, pct, perf, quiet, spread, table, verdict

import stepstore as ss
from stepstore.demo import build_model
from stepstore.flight import FlightRecorder, FlightSeries
from stepstore.tensors.flight import FlightRing

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 5.0  # at most 5 % more time per step
K = 32
BATCH = 32


@dataclass
class Settings:
    """Sizes and repeats; ``--quick`` shrinks them."""

    repeats: int = 7
    steps: int = 400
    persists: int = 5
    puts: int = 20_000

    @classmethod
    def quick(cls) -> Settings:
        """About a quarter of the work."""
        return cls(repeats=3, steps=100, persists=3, puts=5_000)


class Trainer:
    """The demo CNN's training step on a fixed batch, logging its loss into its own run."""

    def __init__(self, run: ss.Run) -> None:
        import torch

        torch.manual_seed(0)
        self.run = run
        self.model = build_model()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.x = torch.rand(BATCH, 1, 8, 8)
        self.y = torch.arange(BATCH) % 10
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def step(self) -> tuple[float, float]:
        """One training step; its wall and training-thread CPU seconds."""
        wall, cpu = perf(), time.thread_time()
        loss = self.loss_fn(self.model(self.x), self.y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.run.log({"loss": loss.detach()})
        return perf() - wall, time.thread_time() - cpu


def paired(store: Path, steps: int) -> tuple[dict[bool, list[float]], ...]:
    """Train without and with the ring step by step in turn (the first of each pair
    alternating), so that the shared machine's load falls on both alike; per-step wall and
    CPU seconds of each, the first 10 steps (which allocate) left out, and the recorder."""
    walls: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    with (
        ss.init("bench-flight-plain", store=store) as plain_run,
        ss.init("bench-flight-ring", store=store) as ring_run,
    ):
        trainers = {False: Trainer(plain_run), True: Trainer(ring_run)}
        model = trainers[True].model
        handle = ss.torch.watch(ring_run, model, what=("activations", "gradients"), flight=K)
        for step in range(steps + 10):
            for flight in (False, True) if step % 2 else (True, False):
                wall, cpu = trainers[flight].step()
                if step >= 10:
                    walls[flight].append(wall)
                    cpus[flight].append(cpu)
    assert handle.flight is not None
    return walls, cpus, handle.flight


def persist(
    store: Path, ring: FlightRecorder, drained: dict[str, FlightSeries]
) -> dict[str, float]:
    """Seconds to drain a full ring alone, then to persist a full ring through a run
    (``run.dump_flight``) and flush it."""
    refill(ring, drained)
    quiet()
    t0 = perf()
    ring.ring.drain()
    drain = perf() - t0
    refill(ring, drained)
    with ss.init("bench-flight-persist", store=store) as run:
        ring.attach(run, fed=False)
        quiet()
        t1 = perf()
        run.dump_flight("full ring")
        t2 = perf()
        run.flush()
        t3 = perf()
        assert len(run.capture_info()["keys"]) == len(drained)
    nbytes = sum(series.values.nbytes for series in drained.values())
    return {
        "drain": drain,
        "dump_flight": t2 - t1,
        "flush": t3 - t2,
        "total": t3 - t1,
        "bytes": nbytes,
    }


def refill(recorder: FlightRecorder, drained: dict[str, FlightSeries]) -> None:
    """Put a drained ring's steps back (the ring is full again)."""
    import torch

    for key, series in drained.items():
        values = torch.from_numpy(series.values)
        for index, step in enumerate(series.steps.tolist()):
            recorder.ring.put(key, step, None, 0.0, values[index])


def put_cost(puts: int) -> dict[str, float]:
    """Seconds per ring put of the CNN's largest activation (32x32x8x8 float32, 256 KiB)."""
    import numpy as np
    import torch

    found = {}
    for name, value in (
        ("torch", torch.rand(BATCH, 32, 8, 8)),
        ("numpy", np.random.default_rng(0).random((BATCH, 32, 8, 8), dtype=np.float32)),
    ):
        ring = FlightRing(K)
        quiet()
        start = perf()
        for step in range(puts):
            ring.put("a", step, None, 0.0, value)
        found[name] = (perf() - start) / puts
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    settings = Settings.quick() if args.quick else Settings()
    import torch

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-flight-"))
    try:
        plain, held, ratios, cpu_ratios = [], [], [], []
        for repeat in range(settings.repeats):
            quiet()
            walls, cpus, recorder = paired(root / f"s{repeat}", settings.steps)
            plain.append(median(walls[False]))
            held.append(median(walls[True]))
            ratios.append(100 * (held[-1] / plain[-1] - 1))
            cpu_ratios.append(100 * (median(cpus[True]) / median(cpus[False]) - 1))
            print(
                f"repeat {repeat}: wall {pct(ratios[-1])}, CPU {pct(cpu_ratios[-1])}",
                file=sys.stderr,
                flush=True,
            )
        _, drained = recorder.dump("snapshot")
        persisted = []
        for index in range(settings.persists):
            persisted.append(persist(root / f"p{index}", recorder, drained))
        puts = put_cost(settings.puts)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    overhead, cpu_overhead = median(ratios), median(cpu_ratios)
    keys = len(drained)
    ring_bytes = sum(series.values.nbytes for series in drained.values())
    step_ms = median(plain) * 1e3
    parts = {
        name: median([p[name] for p in persisted])
        for name in ("drain", "dump_flight", "flush", "total")
    }
    rows = [
        ["time per step, no watch", f"{num(step_ms)} ms", ""],
        ["time per step, flight=32 (activations + gradients)", f"{num(median(held) * 1e3)} ms", ""],
        [
            "overhead, wall time (median of paired ratios; min..max)",
            f"{pct(overhead)} ({pct(spread(ratios)[0])}..{pct(spread(ratios)[1])})",
            f"{verdict(overhead <= TARGET)} (target <= {pct(TARGET)})",
        ],
        [
            "overhead, training-thread CPU time",
            f"{pct(cpu_overhead)} ({pct(spread(cpu_ratios)[0])}..{pct(spread(cpu_ratios)[1])})",
            f"{verdict(cpu_overhead <= TARGET)}",
        ],
        [f"ring: {keys} keys x {K} steps", f"{num(ring_bytes / 2**20)} MiB", ""],
        ["persist: drain the ring alone", f"{num(parts['drain'] * 1e3)} ms", ""],
        [
            "persist: run.dump_flight (drain, order, queue the writes, store the event)",
            f"{num(parts['dump_flight'] * 1e3)} ms",
            f"{num(parts['dump_flight'] / median(plain))} training steps",
        ],
        ["persist: then flush until stored", f"{num(parts['flush'] * 1e3)} ms", ""],
        [
            "persist: full ring stored (dump_flight + flush)",
            f"{num(parts['total'] * 1e3)} ms",
            f"{num(parts['total'] / median(plain))} training steps",
        ],
        ["ring put, 256 KiB torch tensor", f"{num(puts['torch'] * 1e6)} µs", ""],
        ["ring put, 256 KiB NumPy array", f"{num(puts['numpy'] * 1e6)} µs", ""],
    ]
    text = (
        f"# Flight recorder ({settings.repeats} repeats of {settings.steps} steps)\n\n"
        + table(["figure", "value", "note"], rows)
        + "\n"
    )
    print(text)
    suffix = ".quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"flight{suffix}.md").write_text(text)
    results = {
        "settings": asdict(settings),
        "environment": environment(),
        "time": time.time(),
        "step_plain_s": plain,
        "step_flight_s": held,
        "overhead_pct": ratios,
        "cpu_overhead_pct": cpu_ratios,
        "ring_bytes": ring_bytes,
        "persist": persisted,
        "put_s": puts,
    }
    (RESULTS / f"flight{suffix}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
