"""Scalar logging: stepstore against the tools users would pick instead, in one process run.

    python benchmarks/bench_scalars.py            # full run (about 10 minutes on 2 cores)
    python benchmarks/bench_scalars.py --quick    # smaller N, fewer repeats (about 2-3 minutes)

Sections (see benchmarks/README.md): 1 hot path on the calling thread, 2 training-loop
slowdown, 3 sustained ingest, 4 bytes per point, 5 read path, 6 memory. Every figure is the
median of repeats; peers are interleaved with stepstore within each repeat. Prints markdown
and writes ``benchmarks/results/scalars.md`` and ``scalars.json`` (``scalars.quick.*`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    dir_size,
    environment,
    load,
    median,
    num,
    pct,
    percentile,
    perf,
    quiet,
    ratio,
    spread,
    sqlite_checkpoint,
    sqlite_freelist_bytes,
    table,
    verdict,
)

import stepstore as ss

cpu = time.process_time  # all threads of this process
CHUNK = ss.config.Config().chunk_size  # points per sealed chunk (default settings)
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Settings:
    """Sizes and repeats; ``--quick`` shrinks them."""

    repeats: int = 5
    slow_repeats: int = 3  # for the multi-second peers (MLflow, TensorBoard read)
    read_repeats: int = 9  # section 5 (each read is cheap)
    hot_steps: int = 100_000  # section 1: floor, stepstore, csv
    tb_steps: int = 20_000  # section 1: TensorBoard (~80 µs/point)
    mlflow_batch_steps: int = 10_000  # section 1: MLflow log_batch (~150 µs/point)
    mlflow_sync_steps: int = 300  # section 1: MLflow log_metric (~5 ms/point)
    train_steps: int = 3_000  # section 2
    train_rounds: int = 10
    ingest_points: int = 5_000_000  # section 3
    size_points: int = 1_000_000  # section 4: stepstore and csv
    tb_size_points: int = 100_000  # section 4: TensorBoard (and its read in section 5)
    mlflow_size_points: int = 50_000  # section 4: MLflow (and its read in section 5)
    view_points: int = 10_000_000  # section 5: the 2,000-point view
    filter_runs: int = 1_000  # section 5
    memory_points: int = 10_000_000  # section 6

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            repeats=3,
            slow_repeats=2,
            read_repeats=3,
            hot_steps=30_000,
            tb_steps=3_000,
            mlflow_batch_steps=2_000,
            mlflow_sync_steps=60,
            train_steps=1_000,
            train_rounds=2,
            ingest_points=1_000_000,
            size_points=200_000,
            tb_size_points=10_000,
            mlflow_size_points=10_000,
            view_points=2_000_000,
            filter_runs=300,
            memory_points=2_000_000,
        )


def log_line(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load():.2f}] {message}", file=sys.stderr, flush=True)


def silence_peers() -> None:
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "sqlalchemy", "tensorboard", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def noisy_curve(n: int, seed: int = 0, start: int = 0) -> np.ndarray:
    """A noisy float64 loss curve: 2 exp(-t / 3e5) + 0.1 randn."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + n, dtype=np.float64)
    return 2 * np.exp(-t / 3e5) + 0.1 * rng.standard_normal(n)


class MLflow:
    """One MLflow tracking store in a SQLite file (import and schema creation not timed)."""

    def __init__(self, db: Path) -> None:
        import mlflow
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        self.uri = f"sqlite:///{db}"
        self.db = db
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.metric = Metric
        self.experiment = self.client.create_experiment(f"bench-{db.stem}")

    def new_run(self) -> str:
        return self.client.create_run(self.experiment).info.run_id


# ==========================================================================================
# 1. Hot path on the calling thread
# ==========================================================================================


def hot_path(cfg: Settings, tmp: Path) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    n, n_tb = cfg.hot_steps, cfg.tb_steps
    n_mb, n_ms = cfg.mlflow_batch_steps, cfg.mlflow_sync_steps
    curve = noisy_curve(n, seed=1)
    loss_list = curve.tolist()
    acc_list = np.random.default_rng(2).random(n).tolist()
    lr = 0.1
    ml = MLflow(tmp / "mlflow-hot.db")
    samples: dict[str, dict[str, list[float]]] = {}
    last: dict[str, str] = {}

    def add(tool: str, **values: float) -> None:
        for k, v in values.items():
            samples.setdefault(tool, {}).setdefault(k, []).append(v)

    def record(tool: str, points: int, t0: float, t1: float, t2: float, c0: float, **extra: float):
        used = cpu() - c0
        add(tool, us_pt=(t1 - t0) / points * 1e6, close_s=t2 - t1, total_s=t2 - t0, cpu_s=used)
        add(tool, **extra)

    def floor(rep: int) -> None:
        out: list[tuple[str, int, float]] = []
        app = out.append
        loss, acc = loss_list, acc_list
        quiet()
        t0, c0 = perf(), cpu()
        for i in range(n):
            app(("loss", i, loss[i]))
            app(("acc", i, acc[i]))
            app(("lr", i, lr))
        t1 = perf()
        record("floor", 3 * n, t0, t1, t1, c0)

    def stepstore(rep: int) -> None:
        store = tmp / f"hot-ss-{rep}"
        run = ss.init("bench-hot", store=store)
        log = run.log
        loss, acc = loss_list, acc_list
        quiet()
        t0, c0 = perf(), cpu()
        for i in range(n):
            log({"loss": loss[i], "acc": acc[i], "lr": lr})
        t1 = perf()
        run.finish()
        t2 = perf()
        record("stepstore", 3 * n, t0, t1, t2, c0, waits=run.writer_info()["waits"])
        last.update(store=str(store), run=run.id)

    def csv_writer(rep: int) -> None:
        path = tmp / f"hot-{rep}.csv"
        loss, acc = loss_list, acc_list
        with open(path, "w", newline="") as f:
            writerow = csv.writer(f).writerow
            writerow(("step", "loss", "acc", "lr"))
            quiet()
            t0, c0 = perf(), cpu()
            for i in range(n):
                writerow((i, loss[i], acc[i], lr))
            t1 = perf()
        t2 = perf()
        record("csv", 3 * n, t0, t1, t2, c0)

    def tensorboard(rep: int) -> None:
        writer = SummaryWriter(log_dir=str(tmp / f"hot-tb-{rep}"))
        add_scalar = writer.add_scalar
        loss, acc = loss_list, acc_list
        quiet()
        t0, c0 = perf(), cpu()
        for i in range(n_tb):
            add_scalar("loss", loss[i], i)
            add_scalar("acc", acc[i], i)
            add_scalar("lr", lr, i)
        t1 = perf()
        writer.close()
        t2 = perf()
        record("tensorboard", 3 * n_tb, t0, t1, t2, c0)

    def mlflow_batch(rep: int) -> None:
        run_id = ml.new_run()
        client, metric = ml.client, ml.metric
        loss, acc = loss_list, acc_list
        buffer: list[Any] = []
        quiet()
        t0, c0 = perf(), cpu()
        for i in range(n_mb):
            ts = int(time.time() * 1000)
            buffer.append(metric("loss", loss[i], ts, i))
            buffer.append(metric("acc", acc[i], ts, i))
            buffer.append(metric("lr", lr, ts, i))
            if len(buffer) >= 999:
                client.log_batch(run_id, metrics=buffer)
                buffer = []
        t1 = perf()
        if buffer:
            client.log_batch(run_id, metrics=buffer)
        client.set_terminated(run_id)
        t2 = perf()
        record("mlflow_batch", 3 * n_mb, t0, t1, t2, c0)

    def mlflow_sync(rep: int) -> None:
        run_id = ml.new_run()
        log_metric = ml.client.log_metric
        loss, acc = loss_list, acc_list
        quiet()
        t0, c0 = perf(), cpu()
        for i in range(n_ms):
            log_metric(run_id, "loss", loss[i], step=i)
            log_metric(run_id, "acc", acc[i], step=i)
            log_metric(run_id, "lr", lr, step=i)
        t1 = perf()
        ml.client.set_terminated(run_id)
        t2 = perf()
        record("mlflow_sync", 3 * n_ms, t0, t1, t2, c0)

    fast = [floor, stepstore, csv_writer, tensorboard]
    slow = [mlflow_batch, mlflow_sync]
    for rep in range(cfg.repeats):
        tools = fast + (slow if rep < cfg.slow_repeats else [])
        shift = rep % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            log_line(f"1 hot path: {tool.__name__} rep {rep + 1}/{cfg.repeats}")
            tool(rep)

    # Per-step latency: a separate pass timing every call with perf_counter_ns.
    log_line("1 hot path: per-step latency pass")
    latency = {}
    run = ss.init("bench-latency", store=tmp / "latency-ss")
    log = run.log
    clock = time.perf_counter_ns
    per_step = [0] * n
    quiet()
    for i in range(n):
        t0 = clock()
        log({"loss": loss_list[i], "acc": acc_list[i], "lr": lr})
        per_step[i] = clock() - t0
    run.finish()
    latency["stepstore"] = per_step
    out: list[tuple[str, int, float]] = []
    app = out.append
    per_step = [0] * n
    quiet()
    for i in range(n):
        t0 = clock()
        app(("loss", i, loss_list[i]))
        app(("acc", i, acc_list[i]))
        app(("lr", i, lr))
        per_step[i] = clock() - t0
    latency["floor"] = per_step
    del out
    with open(tmp / "latency.csv", "w", newline="") as f:
        writerow = csv.writer(f).writerow
        per_step = [0] * n
        quiet()
        for i in range(n):
            t0 = clock()
            writerow((i, loss_list[i], acc_list[i], lr))
            per_step[i] = clock() - t0
    latency["csv"] = per_step
    lat_summary = {}
    for tool, values in latency.items():
        ordered = sorted(v / 1000 for v in values)
        lat_summary[tool] = {
            "p50_us": percentile(ordered, 50),
            "p99_us": percentile(ordered, 99),
            "p999_us": percentile(ordered, 99.9),
            "max_us": ordered[-1],
            "over_1ms": sum(v > 1_000_000 for v in values),
            "argmax": max(range(len(values)), key=values.__getitem__),
        }
    return {
        "n": {
            "floor": n,
            "stepstore": n,
            "csv": n,
            "tensorboard": n_tb,
            "mlflow_batch": n_mb,
            "mlflow_sync": n_ms,
        },
        "samples": samples,
        "latency": lat_summary,
        "store": last["store"],
        "run": last["run"],
    }


# ==========================================================================================
# 2. Training-loop slowdown
# ==========================================================================================


def training(cfg: Settings, tmp: Path) -> dict[str, Any]:
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812
    from torch.utils.tensorboard import SummaryWriter

    torch.set_num_threads(1)
    try:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x_all = torch.tensor(digits.data / 16.0, dtype=torch.float32)
        y_all = torch.tensor(digits.target, dtype=torch.long)
        data = "sklearn digits (1,797 × 64, scaled to [0, 1])"
    except ImportError:
        gen = torch.Generator().manual_seed(0)
        x_all = torch.randn(2048, 64, generator=gen)
        y_all = torch.randint(0, 10, (2048,), generator=gen)
        data = "random (2,048 × 64)"
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))
    batches = [
        (x_all[perm[i : i + 64]], y_all[perm[i : i + 64]]) for i in range(0, len(x_all) - 63, 64)
    ]
    steps = cfg.train_steps

    def train(variant: str, tag: str) -> tuple[float, float]:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        run = writer = f = writerow = None
        if variant == "stepstore":
            run = ss.init("bench-train", store=tmp / "train-ss")
        elif variant == "csv":
            f = open(tmp / f"train-{tag}.csv", "w", newline="")  # noqa: SIM115
            writerow = csv.writer(f).writerow
            writerow(("step", "loss", "acc", "lr"))
        elif variant == "tensorboard":
            writer = SummaryWriter(log_dir=str(tmp / f"train-tb-{tag}"))
        nb = len(batches)
        quiet()
        t0, c0 = perf(), cpu()
        for step in range(steps):
            x, y = batches[step % nb]
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_v = loss.item()
            acc_v = (out.argmax(1) == y).float().mean().item()
            lr = opt.param_groups[0]["lr"]
            if run is not None:
                run.log({"loss": loss_v, "acc": acc_v, "lr": lr})
            elif writerow is not None:
                writerow((step, loss_v, acc_v, lr))
            elif writer is not None:
                writer.add_scalar("loss", loss_v, step)
                writer.add_scalar("acc", acc_v, step)
                writer.add_scalar("lr", lr, step)
        if run is not None:
            run.finish()
        if f is not None:
            f.close()
        if writer is not None:
            writer.close()
        return perf() - t0, cpu() - c0

    log_line("2 training: warm-up")
    train("baseline", "warmup")
    variants = ["baseline", "stepstore", "csv", "tensorboard", "baseline again"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpus: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(cfg.train_rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            log_line(f"2 training: round {r + 1}/{cfg.train_rounds} {v}")
            wall, used = train(v.split()[0], f"{v.replace(' ', '-')}-{r}")
            times[v].append(wall)
            cpus[v].append(used)

    def versus(values: dict[str, list[float]]) -> dict[str, list[float]]:
        return {
            v: [100 * (t / b - 1) for t, b in zip(values[v], values["baseline"], strict=True)]
            for v in variants
            if v != "baseline"
        }

    return {
        "steps": steps,
        "data": data,
        "times_s": times,
        "cpu_s": cpus,
        "slowdown_pct": versus(times),
        "cpu_slowdown_pct": versus(cpus),
    }


# ==========================================================================================
# 3. Sustained ingest
# ==========================================================================================


def ingest(cfg: Settings, tmp: Path) -> dict[str, Any]:
    configs = [
        ("10 keys/call, journal_slots=1<<22", 10, 1 << 22),
        ("10 keys/call, default journal (1<<18)", 10, None),
        ("50 keys/call, journal_slots=1<<22", 50, 1 << 22),
    ]
    rng = np.random.default_rng(3)
    pool_size = 1 << 14  # more calls than a chunk holds: chunks do not repeat values
    out: dict[str, Any] = {"points": cfg.ingest_points, "configs": {}}
    pools = {}
    for width in sorted({c[1] for c in configs}):
        keys = [f"metric/{k:02d}" for k in range(width)]
        values = rng.standard_normal((pool_size, width)).tolist()
        pools[width] = [dict(zip(keys, row, strict=True)) for row in values]
    for rep in range(cfg.repeats):
        for label, width, slots in configs:
            log_line(f"3 ingest: {label} rep {rep + 1}/{cfg.repeats}")
            calls = cfg.ingest_points // width
            pool, mask = pools[width], pool_size - 1
            store = tmp / f"ingest-{width}-{slots}-{rep}"
            run = ss.init("bench-ingest", store=store, journal_slots=slots)
            log = run.log
            quiet()
            t0 = perf()
            for i in range(calls):
                log(pool[i & mask])
            t1 = perf()
            run.finish()
            t2 = perf()
            info = run.writer_info()
            entry = out["configs"].setdefault(label, {"width": width, "slots": slots or 1 << 18})
            for k, v in (
                ("points_per_s", calls * width / (t2 - t0)),
                ("loop_s", t1 - t0),
                ("finish_s", t2 - t1),
                ("waits", info["waits"]),
                ("wait_s", info["wait_seconds"]),
                ("flushes", info["flushes"]),
            ):
                entry.setdefault(k, []).append(v)
            shutil.rmtree(store, ignore_errors=True)
    return out


# ==========================================================================================
# 4. Bytes per point on disk
# ==========================================================================================


def sizes(cfg: Settings, tmp: Path) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    n = cfg.size_points
    values = noisy_curve(n, seed=4).tolist()
    out: dict[str, Any] = {}

    log_line("4 bytes: stepstore (empty store overhead)")
    empty = tmp / "size-empty-ss"
    ss.init("bench-size", store=empty).finish()
    sqlite_checkpoint(empty / "stepstore.db")
    overhead = dir_size(empty)

    log_line(f"4 bytes: stepstore, {n:,} points")
    store = tmp / "size-ss"
    run = ss.init("bench-size", store=store, journal_slots=1 << 22)
    log = run.log
    t0 = perf()
    for v in values:
        log({"loss": v})
    run.finish()
    elapsed = perf() - t0
    db = store / "stepstore.db"
    before = dir_size(store)
    sqlite_checkpoint(db)
    size = dir_size(store)
    out["stepstore"] = {
        "points": n,
        "bytes": size,
        "bytes_before_checkpoint": before,
        "empty_store_bytes": overhead,
        "freelist_bytes": sqlite_freelist_bytes(db),
        "bytes_per_point": size / n,
        "net_bytes_per_point": (size - overhead) / n,
        "log_and_finish_s": elapsed,
        "store": str(store),
        "run": run.id,
    }

    log_line(f"4 bytes: csv, {n:,} points")
    path = tmp / "size.csv"
    with open(path, "w", newline="") as f:
        writerow = csv.writer(f).writerow
        writerow(("step", "time", "value"))
        for i, v in enumerate(values):
            writerow((i, time.time(), v))
    out["csv"] = {
        "points": n,
        "bytes": path.stat().st_size,
        "bytes_per_point": path.stat().st_size / n,
        "path": str(path),
    }

    n_tb = cfg.tb_size_points
    log_line(f"4 bytes: tensorboard, {n_tb:,} points")
    logdir = tmp / "size-tb"
    writer = SummaryWriter(log_dir=str(logdir))
    for i, v in enumerate(values[:n_tb]):
        writer.add_scalar("loss", v, i)
    writer.close()
    # an empty event file holds only its header record
    empty_tb = tmp / "size-tb-empty"
    SummaryWriter(log_dir=str(empty_tb)).close()
    tb_bytes, tb_empty = dir_size(logdir), dir_size(empty_tb)
    out["tensorboard"] = {
        "points": n_tb,
        "bytes": tb_bytes,
        "bytes_per_point": tb_bytes / n_tb,
        "net_bytes_per_point": (tb_bytes - tb_empty) / n_tb,
        "logdir": str(logdir),
    }

    n_ml = cfg.mlflow_size_points
    log_line(f"4 bytes: mlflow log_batch, {n_ml:,} points")
    ml = MLflow(tmp / "mlflow-size.db")
    run_id = ml.new_run()
    sqlite_checkpoint(ml.db)
    empty_bytes = dir_size(ml.db)
    batch = []
    for i, v in enumerate(values[:n_ml]):
        batch.append(ml.metric("loss", v, int(time.time() * 1000), i))
        if len(batch) == 1000:
            ml.client.log_batch(run_id, metrics=batch)
            batch = []
    if batch:
        ml.client.log_batch(run_id, metrics=batch)
    ml.client.set_terminated(run_id)
    sqlite_checkpoint(ml.db)
    ml_bytes = sum(dir_size(p) for p in tmp.glob("mlflow-size.db*"))
    out["mlflow"] = {
        "points": n_ml,
        "bytes": ml_bytes,
        "empty_db_bytes": empty_bytes,
        "bytes_per_point": (ml_bytes - empty_bytes) / n_ml,
        "note": "net of the empty MLflow schema",
        "db": str(ml.db),
        "run": run_id,
    }
    return out


# ==========================================================================================
# 5. Read path
# ==========================================================================================


def build_view_run(cfg: Settings, tmp: Path) -> tuple[Path, str, float]:
    store = tmp / "view-ss"
    run = ss.init("bench-view", store=store, journal_slots=1 << 22)
    log = run.log
    block = 1_000_000
    t0 = perf()
    for start in range(0, cfg.view_points, block):
        count = min(block, cfg.view_points - start)
        for v in noisy_curve(count, seed=start, start=start).tolist():
            log({"loss": v})
    run.finish()
    return store, run.id, perf() - t0


def build_filter_runs(cfg: Settings, tmp: Path) -> tuple[Path, float]:
    store = tmp / "filter-ss"
    rng = random.Random(5)
    t0 = perf()
    for i in range(cfg.filter_runs):
        params = {
            "lr": rng.choice([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
            "batch_size": rng.choice([32, 64, 128, 256]),
            "optimizer": rng.choice(["sgd", "adam", "adamw"]),
            "model": {"width": rng.choice([32, 64, 128, 256]), "depth": rng.randint(2, 8)},
            "seed": i,
        }
        tags = rng.sample(["baseline", "sweep", "ablation", "long"], k=rng.randint(0, 2))
        run = ss.init("bench-filter", store=store, params=params, tags=tags, fsync=False)
        for step in range(3):
            run.log({"loss": rng.random(), "acc": rng.random()}, step=step)
        run.finish()
    return store, perf() - t0


def reads(cfg: Settings, tmp: Path, hot: dict[str, Any], size: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    out: dict[str, Any] = {}

    def timed(label: str, fn: Any, repeats: int, warm: bool = True) -> Any:
        result = None
        if warm:
            result = fn()
        times = []
        for _ in range(repeats):
            quiet()
            t0 = perf()
            result = fn()
            times.append(perf() - t0)
        rows = len(result) if result is not None else None
        out[label] = {"s": times, "rows": rows, "warm": warm}
        return result

    log_line("5 read: stepstore 1M points")
    st = ss.open(size["stepstore"]["store"])
    rid = size["stepstore"]["run"]
    frame = timed("stepstore_1m", lambda: st.run(rid).scalars("loss"), cfg.read_repeats)
    assert len(frame) == cfg.size_points, len(frame)
    out["stepstore_1m"]["points"] = cfg.size_points

    log_line("5 read: stepstore 100k points (hot-path store)")
    hot_store = ss.open(hot["store"])
    timed("stepstore_100k", lambda: hot_store.run(hot["run"]).scalars("loss"), cfg.read_repeats)
    out["stepstore_100k"]["points"] = cfg.hot_steps

    log_line(f"5 read: building a {cfg.view_points:,}-point run for the view")
    view_store, view_run, build_s = build_view_run(cfg, tmp)
    out["view_build"] = {"points": cfg.view_points, "s": build_s}
    vs = ss.open(view_store)
    log_line("5 read: 2,000-point view")
    timed("view_2000", lambda: vs.run(view_run).scalars("loss", max_points=2000), cfg.read_repeats)
    out["view_2000"]["points"] = cfg.view_points
    for share in (10, 80):  # 80 %: fewer chunks than max_points / 2, so every chunk is decoded
        lo = int(cfg.view_points * (0.9 - share / 100))
        hi = lo + cfg.view_points * share // 100 - 1
        key = f"view_2000_zoom{share}"
        timed(
            key,
            lambda lo=lo, hi=hi: vs.run(view_run).scalars("loss", steps=(lo, hi), max_points=2000),
            cfg.read_repeats,
        )
        out[key]["points"] = hi - lo + 1
    # as a user reads a long run: one slice of steps, then everything
    part = min(1_000_000, cfg.view_points)
    lo = (cfg.view_points - part) // 2
    log_line(f"5 read: {part:,} steps of the {cfg.view_points:,}-point run, and all of it")
    sliced = timed(
        "slice_of_view",
        lambda: vs.run(view_run).scalars("loss", steps=(lo, lo + part - 1)),
        cfg.read_repeats,
    )
    assert len(sliced) == part, len(sliced)
    out["slice_of_view"].update(points=part, of=cfg.view_points)
    everything = timed("all_of_view", lambda: vs.run(view_run).scalars("loss"), cfg.repeats)
    assert len(everything) == cfg.view_points, len(everything)
    out["all_of_view"]["points"] = cfg.view_points
    del everything
    slice_csv = tmp / "slice.csv"
    with open(slice_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("step", "time", "value"))
        micros = sliced["time"].dt.tz_convert(None).to_numpy().astype("datetime64[us]")
        seconds = (micros.astype(np.int64) / 1e6).tolist()
        steps, values = sliced["step"].tolist(), sliced["value"].tolist()
        writer.writerows(zip(steps, seconds, values, strict=True))
    log_line("5 read: pandas.read_csv of the same slice")
    timed("csv_pandas_slice", lambda: pd.read_csv(slice_csv), cfg.read_repeats)
    out["csv_pandas_slice"]["points"] = part
    vs.close()

    log_line(f"5 read: creating {cfg.filter_runs:,} runs")
    filter_store, filter_build = build_filter_runs(cfg, tmp)
    out["filter_build_s"] = filter_build
    fs = ss.open(filter_store)
    where = "params.lr < 0.01 and params.model.width = 64"
    log_line("5 read: filter")
    timed("filter", lambda: fs.runs(where=where), cfg.read_repeats)
    out["filter"]["runs"] = cfg.filter_runs
    out["filter"]["where"] = where
    fs.close()

    log_line("5 read: pandas.read_csv")
    timed("csv_pandas", lambda: pd.read_csv(size["csv"]["path"]), cfg.read_repeats)
    out["csv_pandas"]["points"] = size["csv"]["points"]

    log_line("5 read: tensorboard EventAccumulator (scalars=0)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tb_read() -> list[Any]:
        acc = EventAccumulator(size["tensorboard"]["logdir"], size_guidance={"scalars": 0})
        acc.Reload()
        return acc.Scalars("loss")

    timed("tensorboard", tb_read, cfg.slow_repeats, warm=False)
    out["tensorboard"]["points"] = size["tensorboard"]["points"]

    def tb_default() -> list[Any]:
        acc = EventAccumulator(size["tensorboard"]["logdir"])
        acc.Reload()
        return acc.Scalars("loss")

    out["tensorboard_default_rows"] = len(tb_default())

    log_line("5 read: mlflow get_metric_history")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{size['mlflow']['db']}")
    timed(
        "mlflow",
        lambda: client.get_metric_history(size["mlflow"]["run"], "loss"),
        cfg.slow_repeats,
    )
    out["mlflow"]["points"] = size["mlflow"]["points"]
    st.close()
    hot_store.close()
    return out


# ==========================================================================================
# 6. Memory
# ==========================================================================================

MEMORY_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import psutil
    import stepstore as ss

    def hwm():  # peak RSS of this process image (ru_maxrss would include the parent's)
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    proc = psutil.Process()
    store, calls = sys.argv[1], int(sys.argv[2])
    before_init = proc.memory_info().rss
    run = ss.init("bench-memory", store=store)
    log = run.log
    base = proc.memory_info().rss
    peak = base
    t0 = time.perf_counter()
    for i in range(calls):
        log({"loss": 1.0 / (i + 1), "acc": 0.5 + i * 1e-9, "lr": 0.1})
        if not i % 100_000:
            peak = max(peak, proc.memory_info().rss)
    t1 = time.perf_counter()
    after_log = proc.memory_info().rss
    peak = max(peak, after_log)
    run.finish()
    t2 = time.perf_counter()
    after_finish = proc.memory_info().rss
    count = ss.open(store).run(run.id).summary["loss"]["count"]
    print(json.dumps({
        "points": 3 * calls, "stored": 3 * count,
        "rss_before_init": before_init, "rss_after_init": base,
        "rss_after_log": after_log, "rss_after_finish": after_finish, "rss_peak_sampled": peak,
        "vm_hwm": hwm(),
        "loop_s": t1 - t0, "finish_s": t2 - t1, "writer": run.writer_info(),
    }))
    """
)


def memory(cfg: Settings, tmp: Path) -> dict[str, Any]:
    calls = -(-cfg.memory_points // 3)
    log_line(f"6 memory: {3 * calls:,} points in a fresh subprocess")
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(tmp / "memory-ss"), str(calls)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{result.stderr}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    mb = 2**20
    data["growth_mb"] = (data["rss_after_log"] - data["rss_after_init"]) / mb
    data["growth_after_finish_mb"] = (data["rss_after_finish"] - data["rss_after_init"]) / mb
    data["peak_growth_mb"] = (data["rss_peak_sampled"] - data["rss_after_init"]) / mb
    return data


# ==========================================================================================
# Report
# ==========================================================================================

TARGETS = {
    "floor": 15.0,  # run.log 3 scalars ≤ 15× floor
    "tb_speedup": 50.0,  # ≥ 50× faster per point than SummaryWriter
    "train": 2.0,  # ≤ 2 % slowdown
    "ingest": 1e6,  # ≥ 1M points/s
    "bytes": 10.0,  # ≤ 10 bytes/point
    "read_1m": 0.050,  # ≤ 50 ms
    "read_slice": 0.040,  # 1M steps of a 10M-point run ≤ 40 ms
    "read_all": 0.400,  # all 10M points ≤ 400 ms
    "view": 0.030,  # ≤ 30 ms
    "filter": 0.020,  # ≤ 20 ms
    "rss": 100.0,  # < 100 MB
}


def report(cfg: Settings, res: dict[str, Any], quick: bool) -> str:
    md: list[str] = []
    targets: list[tuple[str, str, str, bool | None]] = []
    env = res["env"]
    pk = env["packages"]
    md.append(f"# stepstore scalar benchmark{' (--quick)' if quick else ''}\n")
    md.append(
        f"Python {env['python']}, {env['cpus']} CPUs, {env['platform']}. "
        + ", ".join(f"{k} {v}" for k, v in pk.items())
        + f". Load average at start {env['loadavg_start'][0]:.2f}, at end "
        f"{res.get('loadavg_end', [0])[0]:.2f}; total {res.get('total_s', 0):.0f} s. "
        "The machine is shared and noisy: every figure is a median of repeats with peers "
        "interleaved; trust the ratios more than absolute times.\n"
    )
    if res.get("section_s"):
        md.append(
            "Seconds per section: "
            + ", ".join(f"{k} {v:.0f}" for k, v in res["section_s"].items())
            + ".\n"
        )

    hot = res.get("hot")
    if hot:
        s, n = hot["samples"], hot["n"]
        floor_us = median(s["floor"]["us_pt"])
        ss_us = median(s["stepstore"]["us_pt"])
        paired = [a / b for a, b in zip(s["stepstore"]["us_pt"], s["floor"]["us_pt"], strict=True)]
        rows = []
        names = {
            "floor": "floor: list.append((name, step, v)) ×3",
            "stepstore": "**stepstore run.log({loss, acc, lr})**",
            "csv": "csv.writer.writerow, 1 row/step",
            "tensorboard": "torch SummaryWriter.add_scalar ×3",
            "mlflow_batch": "MLflow client.log_batch, user-buffered ≤999 (sqlite)",
            "mlflow_sync": "MLflow client.log_metric ×3, synchronous (sqlite)",
        }
        for tool, label in names.items():
            if tool not in s:
                continue
            us = median(s[tool]["us_pt"])
            lo, hi = spread(s[tool]["us_pt"])
            rows.append(
                [
                    label,
                    f"{n[tool]:,}",
                    len(s[tool]["us_pt"]),
                    f"{num(us, 3)} [{num(lo, 3)}–{num(hi, 3)}]",
                    ratio(us / floor_us),
                    "—" if tool in ("floor", "stepstore") else ratio(us / ss_us),
                    num(median(s[tool]["close_s"]), 3),
                    num(median(s[tool]["total_s"]), 3),
                    num(median(s[tool]["cpu_s"]) / median(s[tool]["total_s"]), 2),
                ]
            )
        md.append("## 1. Hot path: 3 scalars per step, calling thread\n")
        md.append(
            table(
                [
                    "tool (API)",
                    "N steps",
                    "repeats",
                    "µs/point median [min–max]",
                    "×floor",
                    "stepstore speed-up",
                    "close/finish s",
                    "total to closed s",
                    "process CPU ÷ wall",
                ],
                rows,
            )
        )
        lat = hot["latency"]
        md.append(
            f"\nstepstore ×floor paired per repeat: median {ratio(median(paired))} "
            f"[{ratio(min(paired))}–{ratio(max(paired))}]. stepstore log() waits for journal "
            f"room: {sum(s['stepstore']['waits']):.0f} over all repeats.\n"
        )
        md.append("Per-step latency (separate pass, every call timed with perf_counter_ns):\n")
        md.append(
            table(
                [
                    "tool",
                    "p50 µs/step",
                    "p99 µs/step",
                    "p99.9 µs/step",
                    "max µs/step (at step)",
                    "steps > 1 ms",
                ],
                [
                    [
                        t,
                        num(v["p50_us"]),
                        num(v["p99_us"]),
                        num(v["p999_us"]),
                        f"{num(v['max_us'])} ({v['argmax']:,})",
                        v["over_1ms"],
                    ]
                    for t, v in lat.items()
                ],
            )
        )
        md.append("")
        targets.append(
            (
                "run.log 3 scalars ≤ 15× floor",
                f"{ratio(ss_us / floor_us)} (paired median {ratio(median(paired))})",
                "≤ 15×",
                ss_us / floor_us <= TARGETS["floor"],
            )
        )
        if "tensorboard" in s:
            speedup = median(s["tensorboard"]["us_pt"]) / ss_us
            targets.append(
                (
                    "≥ 50× faster per point than SummaryWriter",
                    ratio(speedup),
                    "≥ 50×",
                    speedup >= TARGETS["tb_speedup"],
                )
            )

    train = res.get("train")
    if train:
        md.append(
            f"## 2. Training-loop slowdown: MLP 64→256→256→10, batch 64, SGD, "
            f"{train['steps']:,} steps, torch 1 thread, {train['data']}\n"
        )
        base = train["times_s"]["baseline"]
        cbase = train["cpu_s"]["baseline"]
        rows = [
            [
                "baseline (no logging)",
                len(base),
                f"{num(median(base), 3)} [{num(min(base), 3)}–{num(max(base), 3)}]",
                "—",
                "—",
                f"{num(median(cbase), 3)}",
                "—",
                "—",
            ]
        ]
        for v, sl in train["slowdown_pct"].items():
            t = train["times_s"][v]
            csl = train["cpu_slowdown_pct"][v]
            label = "baseline again (noise band)" if v == "baseline again" else v
            rows.append(
                [
                    label,
                    len(t),
                    f"{num(median(t), 3)} [{num(min(t), 3)}–{num(max(t), 3)}]",
                    pct(median(sl)),
                    f"{pct(min(sl))} … {pct(max(sl))}",
                    f"{num(median(train['cpu_s'][v]), 3)}",
                    pct(median(csl)),
                    f"{pct(min(csl))} … {pct(max(csl))}",
                ]
            )
        md.append(
            table(
                [
                    "variant",
                    "rounds",
                    "wall s median [min–max]",
                    "wall slowdown median",
                    "wall range",
                    "CPU s median",
                    "CPU slowdown median",
                    "CPU range",
                ],
                rows,
            )
        )
        md.append(
            "\nEach round runs every variant once (order rotated); slowdown is against the same "
            "round's baseline. Logging, close()/finish() and `.item()` (in every variant) are "
            "timed. CPU = process CPU time (all threads, so background writers count), less "
            "sensitive than wall time to other jobs on the machine.\n"
        )
        sl = median(train["slowdown_pct"]["stepstore"])
        noise = train["slowdown_pct"]["baseline again"]
        csl = median(train["cpu_slowdown_pct"]["stepstore"])
        targets.append(
            (
                "training slowdown ≤ 2 % (wall)",
                f"{pct(sl)} (CPU {pct(csl)}; baseline-vs-baseline wall "
                f"{pct(min(noise))} … {pct(max(noise))})",
                "≤ 2 %",
                sl <= TARGETS["train"],
            )
        )

    ing = res.get("ingest")
    if ing:
        md.append(
            f"## 3. Sustained ingest, writer included: {ing['points']:,} points, first log() "
            "to finish() returning\n"
        )
        rows = []
        for label, e in ing["configs"].items():
            rows.append(
                [
                    label,
                    len(e["points_per_s"]),
                    num(median(e["points_per_s"]) / 1e6, 2),
                    f"{num(min(e['points_per_s']) / 1e6)}–{num(max(e['points_per_s']) / 1e6)}",
                    num(median(e["loop_s"]), 2),
                    num(median(e["finish_s"]), 2),
                    f"{median(e['waits']):.0f} / {num(median(e['wait_s']), 2)} s",
                    f"{median(e['flushes']):.0f}",
                ]
            )
        md.append(
            table(
                [
                    "configuration",
                    "repeats",
                    "M points/s median",
                    "range",
                    "log loop s",
                    "finish s",
                    "log() waits / s waited",
                    "flushes",
                ],
                rows,
            )
        )
        md.append("")
        for label, e in ing["configs"].items():
            rate = median(e["points_per_s"])
            targets.append(
                (
                    f"ingest ≥ 1M points/s ({label})",
                    f"{num(rate / 1e6)} M/s",
                    "≥ 1 M/s",
                    rate >= TARGETS["ingest"],
                )
            )

    size = res.get("size")
    if size:
        md.append("## 4. Bytes per point on disk: noisy float64 loss curve with step and time\n")
        sz, csv_b = size["stepstore"], size["csv"]["bytes_per_point"]
        rows = [
            [
                "**stepstore** (db after wal_checkpoint(TRUNCATE))",
                f"{sz['points']:,}",
                f"{sz['bytes']:,}",
                num(sz["bytes_per_point"]),
                f"net of empty store {num(sz['net_bytes_per_point'])}; "
                f"{sz['freelist_bytes']:,} B free pages; before checkpoint "
                f"{sz['bytes_before_checkpoint']:,} B",
            ],
            [
                "csv (step, time, value)",
                f"{size['csv']['points']:,}",
                f"{size['csv']['bytes']:,}",
                num(csv_b),
                f"{ratio(csv_b / sz['bytes_per_point'])} stepstore",
            ],
            [
                "TensorBoard event file (float32 values)",
                f"{size['tensorboard']['points']:,}",
                f"{size['tensorboard']['bytes']:,}",
                num(size["tensorboard"]["bytes_per_point"]),
                f"{ratio(size['tensorboard']['bytes_per_point'] / sz['bytes_per_point'])} "
                "stepstore",
            ],
            [
                "MLflow sqlite (net of empty schema)",
                f"{size['mlflow']['points']:,}",
                f"{size['mlflow']['bytes']:,}",
                num(size["mlflow"]["bytes_per_point"]),
                f"{ratio(size['mlflow']['bytes_per_point'] / sz['bytes_per_point'])} stepstore",
            ],
        ]
        md.append(table(["format", "points", "bytes", "bytes/point", "notes"], rows))
        md.append(
            f"\nstepstore logged and finished {sz['points']:,} single-key points in "
            f"{sz['log_and_finish_s']:.2f} s.\n"
        )
        targets.append(
            (
                "≤ 10 bytes/point",
                f"{num(sz['bytes_per_point'])} B",
                "≤ 10",
                sz["bytes_per_point"] <= TARGETS["bytes"],
            )
        )

    rd = res.get("read")
    if rd:
        md.append("## 5. Read path (warm: one untimed call first; median of repeats)\n")

        def path(points: int) -> str:
            return f"~{-(-points // CHUNK):,} chunks of {CHUNK:,}"

        def row(label: str, key: str, extra: str = "") -> list[str]:
            e = rd[key]
            t = median(e["s"])
            pts = e.get("points")
            per = f"{t / pts * 1e9:.0f}" if pts else "—"
            return [
                label,
                f"{pts:,}" if pts else "—",
                f"{e['rows']:,}" if e.get("rows") is not None else "—",
                len(e["s"]),
                num(t * 1000, 2),
                f"{num(min(e['s']) * 1000)}–{num(max(e['s']) * 1000)}",
                per,
                extra,
            ]

        rows = [
            row("**stepstore** RunView.scalars('loss') → pandas", "stepstore_1m"),
            row("**stepstore** RunView.scalars('loss') → pandas", "stepstore_100k"),
            row(
                "**stepstore** scalars('loss', max_points=2000)",
                "view_2000",
                f"{path(rd['view_2000']['points'])}; store built in {rd['view_build']['s']:.1f} s",
            ),
            row(
                "**stepstore** same, zoomed to 10 % of the steps",
                "view_2000_zoom10",
                path(rd["view_2000_zoom10"]["points"]),
            ),
            row(
                "**stepstore** same, zoomed to 80 % of the steps",
                "view_2000_zoom80",
                path(rd["view_2000_zoom80"]["points"]),
            ),
            row(
                f"**stepstore** Store.runs(where=...) over {rd['filter']['runs']:,} runs",
                "filter",
                f"`{rd['filter']['where']}`; runs created in {rd['filter_build_s']:.1f} s",
            ),
            row(
                f"**stepstore** scalars('loss', steps=...): {rd['slice_of_view']['points']:,} "
                f"steps of the {rd['slice_of_view']['of']:,}-point run",
                "slice_of_view",
                path(rd["slice_of_view"]["points"]),
            ),
            row(
                "**stepstore** scalars('loss'): all of that run",
                "all_of_view",
                path(rd["all_of_view"]["points"]),
            ),
            row("pandas.read_csv of the csv", "csv_pandas"),
            row("pandas.read_csv of the same slice (step, time, value)", "csv_pandas_slice"),
            row(
                "TensorBoard EventAccumulator + Reload, size_guidance scalars=0",
                "tensorboard",
                f"default size_guidance returns {rd['tensorboard_default_rows']:,} points",
            ),
            row("MLflow get_metric_history", "mlflow"),
        ]
        md.append(
            table(
                [
                    "read",
                    "points stored",
                    "rows returned",
                    "repeats",
                    "ms median",
                    "ms range",
                    "ns/point",
                    "notes",
                ],
                rows,
            )
        )
        md.append("")
        for name, key, limit, shown in (
            ("1M points read ≤ 50 ms", "stepstore_1m", TARGETS["read_1m"], "≤ 50 ms"),
            (
                f"2,000-pt view of {rd['view_2000']['points'] / 1e6:.0f}M points ≤ 30 ms",
                "view_2000",
                TARGETS["view"],
                "≤ 30 ms",
            ),
            (
                f"filter {rd['filter']['runs']:,} runs ≤ 20 ms",
                "filter",
                TARGETS["filter"],
                "≤ 20 ms",
            ),
        ):
            t = median(rd[key]["s"])
            points = rd[key].get("points")
            if key == "stepstore_1m" and points != 1_000_000:
                name = f"{points / 1e6:g}M points read (target is for 1M) ≤ 50 ms"
            targets.append((name, f"{t * 1000:.1f} ms", shown, t <= limit))
        sliced, everything = median(rd["slice_of_view"]["s"]), median(rd["all_of_view"]["s"])
        csv_s = median(rd["csv_pandas_slice"]["s"])
        part, whole = rd["slice_of_view"]["points"], rd["all_of_view"]["points"]
        targets += [
            (
                f"{part / 1e6:g}M steps of a {whole / 1e6:g}M-point run ≤ 40 ms",
                f"{sliced * 1000:.1f} ms",
                "≤ 40 ms",
                sliced <= TARGETS["read_slice"],
            ),
            (
                "same slice ≤ ½ pandas.read_csv of it",
                f"{sliced / csv_s:.2f}× read_csv",
                "≤ 0.5×",
                sliced <= csv_s / 2,
            ),
            (
                f"all {whole / 1e6:g}M points ≤ 400 ms",
                f"{everything * 1000:.0f} ms",
                "≤ 400 ms",
                everything <= TARGETS["read_all"],
            ),
        ]

    mem = res.get("memory")
    if mem:
        md.append(
            f"## 6. Memory: RSS growth logging {mem['points']:,} points (3 keys per call), "
            "fresh subprocess\n"
        )
        mb = 2**20
        md.append(
            table(
                ["measure", "MB"],
                [
                    ["RSS before init (python + imports)", num(mem["rss_before_init"] / mb, 1)],
                    ["RSS after init (baseline)", num(mem["rss_after_init"] / mb, 1)],
                    ["growth after logging, before finish()", num(mem["growth_mb"], 1)],
                    ["growth after finish()", num(mem["growth_after_finish_mb"], 1)],
                    ["peak growth (sampled every 100k calls)", num(mem["peak_growth_mb"], 1)],
                    ["VmHWM: peak RSS of the process (incl. imports)", num(mem["vm_hwm"] / mb, 1)],
                ],
            )
        )
        md.append(
            f"\nLoop {mem['loop_s']:.1f} s ({mem['points'] / mem['loop_s'] / 1e6:.2f} M "
            f"points/s on the calling thread), finish {mem['finish_s']:.2f} s; points stored "
            f"{mem['stored']:,}; writer {mem['writer']}.\n"
        )
        growth = max(mem["growth_mb"], mem["peak_growth_mb"])
        targets.append(
            (
                f"{mem['points'] / 1e6:g}M points → < 100 MB RSS growth",
                f"{num(growth, 1)} MB",
                "< 100 MB",
                growth < TARGETS["rss"],
            )
        )

    md.append("## Targets\n")
    md.append(
        table(
            ["target", "measured", "goal", "verdict"],
            [[a, b, c, verdict(d)] for a, b, c, d in targets],
        )
    )
    md.append("")
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, fewer repeats")
    parser.add_argument("--repeats", type=int, help="repeats per measurement (default 5)")
    parser.add_argument(
        "--only", default="1,2,3,4,5,6", help="comma-separated sections to run (5 needs 1 and 4)"
    )
    parser.add_argument("--tmp", help="directory for the stores (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the stores after the run")
    parser.add_argument("--out", default=str(RESULTS), help="where to write scalars.md/.json")
    args = parser.parse_args()

    cfg = Settings.quick() if args.quick else Settings()
    if args.repeats:
        cfg.repeats = args.repeats
        cfg.slow_repeats = min(cfg.slow_repeats, args.repeats)
    only = {int(s) for s in args.only.split(",") if s.strip()}
    if 5 in only:
        only |= {1, 4}
    silence_peers()
    started = perf()
    res: dict[str, Any] = {"env": environment(), "settings": asdict(cfg), "quick": args.quick}
    tmp = Path(tempfile.mkdtemp(prefix="stepstore-bench-", dir=args.tmp))
    log_line(f"stores under {tmp}")
    try:
        sections = {
            1: ("hot", lambda: hot_path(cfg, tmp)),
            2: ("train", lambda: training(cfg, tmp)),
            3: ("ingest", lambda: ingest(cfg, tmp)),
            4: ("size", lambda: sizes(cfg, tmp)),
            5: ("read", lambda: reads(cfg, tmp, res["hot"], res["size"])),
            6: ("memory", lambda: memory(cfg, tmp)),
        }
        res["section_s"] = {}
        for number, (name, fn) in sections.items():
            if number in only:
                t0 = perf()
                res[name] = fn()
                res["section_s"][name] = round(perf() - t0, 1)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    res["total_s"] = perf() - started
    res["loadavg_end"] = os.getloadavg()
    text = report(cfg, res, args.quick)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "scalars.quick" if args.quick else "scalars"
    if only != {1, 2, 3, 4, 5, 6}:
        stem += "." + "".join(str(s) for s in sorted(only))
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    log_line(f"wrote {out / stem}.md and .json in {res['total_s']:.0f} s")


if __name__ == "__main__":
    main()
