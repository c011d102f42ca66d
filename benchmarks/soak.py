"""Soak: a long run at a scale that finishes in minutes, with flat memory and steady speed.

Logs scalar points (10 keys per call) and, every ``--tensor-every`` calls, a 1M-element
float32 tensor, for ``--points`` scalar points in all; every ``--report`` calls prints
throughput and resident memory, then checks that the store reads back and passes
``check()``. Not a test: run it by hand.

    python benchmarks/soak.py                  # 30M points, ~2.4 GB of tensors
    python benchmarks/soak.py --points 2e6     # a quick pass
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time

import numpy as np

import stepstore as ss

KEYS = [f"metric/{i}" for i in range(10)]


def rss_mb() -> float:
    """Resident memory of this process, MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=30e6)
    parser.add_argument("--tensor-every", type=int, default=5_000)
    parser.add_argument("--report", type=int, default=200_000)
    args = parser.parse_args()
    calls = int(args.points) // len(KEYS)
    tensor = (np.random.default_rng(0).standard_normal(1 << 20) * 0.02).astype(np.float32)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as root:
        run = ss.init("soak", store=root, journal_slots=1 << 20)
        values = dict.fromkeys(KEYS, 0.0)
        rates, memory = [], []
        start = last = time.perf_counter()
        for i in range(calls):
            values["metric/0"] = float(i)
            run.log({**values, "weights": tensor} if i % args.tensor_every == 0 else values)
            if (i + 1) % args.report == 0:
                now = time.perf_counter()
                rates.append(args.report * len(KEYS) / (now - last) / 1e6)
                memory.append(rss_mb())
                print(
                    f"{(i + 1) * len(KEYS) / 1e6:7.1f} M points  {rates[-1]:5.2f} M points/s  "
                    f"RSS {memory[-1]:7.1f} MB",
                    flush=True,
                )
                last = now
        run.finish()
        took = time.perf_counter() - start
        store = ss.open(root)
        view = store.run(run.id)
        assert view.summary["metric/0"]["count"] == calls
        assert view.scalars("metric/0", steps=(calls - 5, calls))["value"].tolist()[-1] == calls - 1
        problems = store.check()
        print(
            f"\n{calls * len(KEYS) / 1e6:.1f} M points and {len(view.tensor('weights'))} "
            f"tensors of 4 MB in {took:.1f} s ({calls * len(KEYS) / took / 1e6:.2f} M points/s)"
        )
        if rates:
            print(
                f"throughput per interval: median {statistics.median(rates):.2f}, "
                f"min {min(rates):.2f}, max {max(rates):.2f} M points/s"
            )
            print(
                f"RSS: first report {memory[0]:.1f} MB, last {memory[-1]:.1f} MB, "
                f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.1f} MB"
            )
        print("check():", problems if problems else "ok")


if __name__ == "__main__":
    main()
