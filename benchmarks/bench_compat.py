"""Importing other tools' logs against reading them with the tools' own Python APIs.

    python benchmarks/bench_compat.py            # 1M TensorBoard scalar events, 1M MLflow points
    python benchmarks/bench_compat.py --quick    # 100k of each

Section 1 (TensorBoard): an event file of scalar events (two tags, as torch's
``SummaryWriter.add_scalar`` writes them) is imported with ``stepstore import tensorboard``'s
function (read, CRC-checked, decoded and written into a fresh store) and read with
TensorBoard's own ``EventAccumulator`` (``size_guidance`` 0 for scalars: keep every event,
then ``Scalars(tag)`` of each tag). Each figure is the median of repeats; the target is an
import at least 10x faster than TensorBoard's read. Prints markdown and writes
``benchmarks/results/compat.md`` and ``compat.json`` (``compat.quick.*`` with ``--quick``).

Section 2 (MLflow): a run with N metric points (one key) in an MLflow SQLite store and in an
MLflow file store, created with ``MlflowClient`` and filled as MLflow lays points out (rows of
its ``metrics`` table, lines of its ``metrics/KEY`` file: what ``log_batch`` writes, without
its minutes), is imported with ``stepstore import mlflow``'s functions into a fresh store and
read with ``MlflowClient.get_metric_history``. Target: import at least 10x faster.

Sections are a dict in :func:`main`, so other tools can join them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, load, median, num, perf, quiet, ratio, spread, table, verdict

import stepstore as ss

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Settings:
    """Sizes and repeats; ``--quick`` shrinks them."""

    repeats: int = 5
    tb_events: int = 1_000_000
    mlflow_points: int = 1_000_000
    mlflow_repeats: int = 3  # MLflow's file store takes ~100 s per 1M-point read

    @classmethod
    def quick(cls) -> Settings:
        return cls(repeats=3, tb_events=100_000, mlflow_points=100_000)


def log_line(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {message}", file=sys.stderr, flush=True)


def write_scalar_events(path: Path, count: int) -> None:
    """``count`` scalar events (tags ``loss`` and ``accuracy`` in turn), framed as
    TensorBoard frames them, preceded by the file-version event."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    from stepstore.io.tfrecord import frame

    start = 1.7e9
    records = [Event(wall_time=start, file_version="brain.Event:2").SerializeToString()]
    for i in range(count):
        tag = "loss" if i % 2 else "accuracy"
        value = Summary.Value(tag=tag, simple_value=1.0 / (i + 1))
        event = Event(wall_time=start + i * 1e-3, step=i // 2, summary=Summary(value=[value]))
        records.append(event.SerializeToString())
    with open(path, "wb") as out:
        for r in records:
            out.write(frame(r))


def tensorboard(cfg: Settings, tmp: Path) -> dict[str, Any]:
    """Section 1: import N scalar events vs EventAccumulator reading them."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    from stepstore.io.tensorboard_import import import_tensorboard

    logdir = tmp / "tb" / "run"
    logdir.mkdir(parents=True)
    log_line(f"1 tensorboard: writing {cfg.tb_events:,} scalar events")
    write_scalar_events(logdir / "events.out.tfevents.1700000000.bench", cfg.tb_events)
    size = sum(f.stat().st_size for f in logdir.iterdir())
    ours, theirs = [], []
    for attempt in range(cfg.repeats):
        store_path = tmp / f"store-{attempt}"
        ss.init("seed", store=store_path).finish()  # the store exists, as after a first run
        store = ss.open(store_path)
        quiet()
        t0 = perf()
        (done,) = import_tensorboard(tmp / "tb", store)
        ours.append(perf() - t0)
        assert done.values == cfg.tb_events and done.status == "finished", done
        points = sum(len(store.run(done.run_id).columns(k).step) for k in ("loss", "accuracy"))
        assert points == cfg.tb_events
        store.close()
        shutil.rmtree(store_path)
        quiet()
        t0 = perf()
        acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0})
        acc.Reload()
        read = sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])
        theirs.append(perf() - t0)
        assert read == cfg.tb_events
        log_line(
            f"1 tensorboard: repeat {attempt}: import {ours[-1]:.2f} s, read {theirs[-1]:.2f} s"
        )
    return {"events": cfg.tb_events, "bytes": size, "import_s": ours, "accumulator_s": theirs}


def fill_mlflow(kind: str, folder: Path, points: int) -> tuple[str, str]:
    """An MLflow store of ``kind`` (``sqlite`` or ``file``) with one run of ``points``
    points of the metric ``loss``; returns its tracking URI and the run id."""
    import numpy as np
    from mlflow import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}" if kind == "sqlite" else f"file://{folder / 'mlruns'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("bench", artifact_location=str(folder / "artifacts"))
    run_id = client.create_run(experiment, run_name="million").info.run_id
    values = np.random.default_rng(0).standard_normal(points).tolist()
    start = 1_700_000_000_000
    if kind == "sqlite":
        import sqlite3

        with sqlite3.connect(folder / "mlflow.db") as db:
            db.executemany(
                "INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid) "
                "VALUES ('loss', ?, ?, ?, 0, ?)",
                ((v, start + i, i, run_id) for i, v in enumerate(values)),
            )
    else:
        metrics = folder / "mlruns" / experiment / run_id / "metrics"
        metrics.mkdir(parents=True, exist_ok=True)
        with open(metrics / "loss", "w") as out:
            out.writelines(f"{start + i} {v} {i}\n" for i, v in enumerate(values))
    client.set_terminated(run_id)
    return uri, run_id


def mlflow_import(cfg: Settings, tmp: Path) -> dict[str, Any]:
    """Section 2: import an N-point MLflow run vs MlflowClient.get_metric_history."""
    import logging
    import warnings

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 refuses file stores otherwise
    warnings.simplefilter("ignore")  # MLflow's SQLAlchemy deprecation warnings
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "Creating tables" lines

    from stepstore.backends import open_backend
    from stepstore.io.mlflow_import import import_mlflow
    from stepstore.io.mlflow_source import open_source

    found: dict[str, Any] = {"points": cfg.mlflow_points}
    for kind in ("sqlite", "file"):
        folder = tmp / f"mlflow-{kind}"
        folder.mkdir()
        log_line(f"2 mlflow {kind}: writing a run of {cfg.mlflow_points:,} points")
        uri, run_id = fill_mlflow(kind, folder, cfg.mlflow_points)
        ours, theirs = [], []
        for attempt in range(cfg.mlflow_repeats):
            store_path = tmp / f"store-{kind}-{attempt}"
            ss.init("seed", store=store_path).finish()  # the store exists, as after a first run
            backend = open_backend(str(store_path), create=False)
            quiet()
            t0 = perf()
            source = open_source(uri)
            (done,) = import_mlflow(source, backend)
            source.close()
            ours.append(perf() - t0)
            backend.close()
            assert done.points == cfg.mlflow_points and done.action == "imported", done
            with ss.open(store_path) as store:
                assert len(store.run(run_id).columns("loss").step) == cfg.mlflow_points
            shutil.rmtree(store_path)
            quiet()
            t0 = perf()
            history = MlflowClient(uri).get_metric_history(run_id, "loss")
            theirs.append(perf() - t0)
            assert len(history) == cfg.mlflow_points
            del history
            log_line(
                f"2 mlflow {kind}: repeat {attempt}: import {ours[-1]:.2f} s, "
                f"get_metric_history {theirs[-1]:.2f} s"
            )
        found[kind] = {"import_s": ours, "history_s": theirs}
    return found


def report(cfg: Settings, res: dict[str, Any], quick: bool) -> str:
    env = res["env"]
    md = [
        f"# stepstore compat benchmark{' (quick)' if quick else ''}",
        "",
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs; load average "
        f"{env['loadavg_start'][0]:.2f} at the start, {res['loadavg_end'][0]:.2f} at the end. "
        f"Medians of {cfg.repeats} repeats.",
        "",
    ]
    targets = []
    if "tensorboard" in res:
        r = res["tensorboard"]
        ours, theirs = median(r["import_s"]), median(r["accumulator_s"])
        rows = []
        for name, runs in (
            ("stepstore import (read, CRC checks, decode, write the store)", r["import_s"]),
            ("TensorBoard EventAccumulator (Reload + Scalars)", r["accumulator_s"]),
        ):
            lo, hi = spread(runs)
            rows.append(
                [
                    name,
                    num(median(runs)),
                    f"{num(lo)}–{num(hi)}",
                    f"{r['events'] / median(runs):,.0f}",
                ]
            )
        md += [
            f"## 1. TensorBoard: {r['events']:,} scalar events ({r['bytes'] / 1e6:.1f} MB, 2 tags)",
            "",
            table(["what", "median s", "range s", "events/s"], rows),
            "",
            f"Import is {ratio(theirs / ours)} faster than TensorBoard's own read.",
            "",
        ]
        targets.append(
            (
                f"import {r['events']:,} TB scalar events >= 10x faster than EventAccumulator",
                ratio(theirs / ours),
                theirs / ours >= 10,
            )
        )
    if "mlflow" in res:
        r = res["mlflow"]
        rows = []
        for kind in ("sqlite", "file"):
            ours, theirs = median(r[kind]["import_s"]), median(r[kind]["history_s"])
            for name, runs in (
                ("stepstore import (read the store, write the run)", r[kind]["import_s"]),
                ("MlflowClient.get_metric_history", r[kind]["history_s"]),
            ):
                lo, hi = spread(runs)
                rows.append(
                    [
                        f"{kind} store: {name}",
                        num(median(runs)),
                        f"{num(lo)}–{num(hi)}",
                        f"{r['points'] / median(runs):,.0f}",
                    ]
                )
            targets.append(
                (
                    f"import a {r['points']:,}-point MLflow run ({kind} store) >= 10x faster "
                    "than get_metric_history",
                    ratio(theirs / ours),
                    theirs / ours >= 10,
                )
            )
        md += [
            f"## 2. MLflow: one run of {r['points']:,} metric points "
            f"(medians of {cfg.mlflow_repeats})",
            "",
            table(["what", "median s", "range s", "points/s"], rows),
            "",
        ]
    md += [
        "## Targets",
        "",
        table(["target", "measured", "verdict"], [[a, b, verdict(c)] for a, b, c in targets]),
        "",
    ]
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, fewer repeats")
    parser.add_argument("--repeats", type=int, help="repeats per measurement")
    parser.add_argument("--only", default="1,2", help="comma-separated sections to run")
    parser.add_argument("--tmp", help="directory for the logs and stores (default: system temp)")
    parser.add_argument("--out", default=str(RESULTS), help="where to write compat.md/.json")
    args = parser.parse_args()
    cfg = Settings.quick() if args.quick else Settings()
    if args.repeats:
        cfg.repeats = args.repeats
    only = {int(s) for s in args.only.split(",") if s.strip()}
    res: dict[str, Any] = {"env": environment(), "settings": asdict(cfg), "quick": args.quick}
    tmp = Path(tempfile.mkdtemp(prefix="stepstore-bench-compat-", dir=args.tmp))
    sections = {1: ("tensorboard", tensorboard), 2: ("mlflow", mlflow_import)}
    try:
        for number, (name, fn) in sections.items():
            if number in only:
                res[name] = fn(cfg, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["loadavg_end"] = list(os.getloadavg())
    text = report(cfg, res, args.quick)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "compat.quick" if args.quick else "compat"
    if only != set(sections):
        stem += "." + "".join(str(s) for s in sorted(only))
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    log_line(f"wrote {out / stem}.md and .json")


if __name__ == "__main__":
    main()
