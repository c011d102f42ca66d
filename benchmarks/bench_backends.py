"""Backends: ingest with concurrent writers and the read path on SQLite, PostgreSQL and MariaDB.

    python benchmarks/bench_backends.py            # full run (about 8-10 minutes on 2 cores)
    python benchmarks/bench_backends.py --quick    # smaller N, one repeat (about 2 minutes)

For each backend (an embedded SQLite store in a temporary directory; PostgreSQL and MariaDB
each in a freshly created database, dropped afterwards):

1. Ingest with 1, 4 and 16 writer processes. The writers start together, each logs its own
   run (10 keys per ``run.log`` call, ``journal_slots=1<<22``, default flush and fsync) and
   waits at a barrier after ``ss.init``. Aggregate points/s = all points / the wall time from
   the barrier's release to the last ``finish()`` returning. Each repeat gets a fresh store.
   Then the same with 16 processes as the ranks of one distributed job recording into one
   shared run with ``ranks="all"`` (``RANK``/``WORLD_SIZE``/``STEPSTORE_RUN_ID`` set).
2. Read path (warm, median of repeats): one key's 1M points into pandas, a 2,000-point
   ``max_points`` view of a 10M-point key, and ``store.runs(where=...)`` over 1,000 small
   runs. The three runs are recorded once in SQLite and copied (``stepstore.io.copy_runs``)
   into each server database, so every backend reads the same chunks.

Servers: ``$STEPSTORE_BENCH_POSTGRESQL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
and ``$STEPSTORE_BENCH_MARIADB`` (default ``mariadb://root@127.0.0.1:3306/test``), whose
database is only used to create and drop the benchmark's own. An unreachable server is
reported and left out. Prints markdown and writes ``benchmarks/results/backends.md`` and
``backends.json`` (a ``--quick`` run or an ``--only`` run writes nothing there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, load, median, num, perf, quiet, ratio, spread, table, verdict

import stepstore as ss

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve()
WIDTH = 10  # keys per run.log call
SLOTS = 1 << 22
POOL = 1 << 14  # pre-built dicts per writer: more calls than a chunk holds
WHERE = "params.lr < 0.01 and params.model.width = 64"
SERVERS = {
    "postgresql": os.environ.get(
        "STEPSTORE_BENCH_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("STEPSTORE_BENCH_MARIADB", "mariadb://root@127.0.0.1:3306/test"),
}


@dataclass
class Settings:
    """Sizes and repeats; ``--quick`` shrinks them."""

    writers: tuple[int, ...] = (1, 4, 16)
    ranks: int = 16  # processes of the "ranks of one run" ingest
    ingest_repeats: int = 3
    read_repeats: int = 5
    points_per_writer: int = 1_000_000  # N per writer process (16 writers: 16M points)
    key_points: int = 1_000_000  # the "1M points into pandas" key
    view_points: int = 10_000_000  # the series behind the 2,000-point view
    filter_runs: int = 1_000

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            ingest_repeats=1,
            read_repeats=3,
            points_per_writer=200_000,
            key_points=200_000,
            view_points=2_000_000,
            filter_runs=300,
        )


def log_line(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load():.2f}] {message}", file=sys.stderr, flush=True)


# ==========================================================================================
# Stores: a temporary SQLite directory or a fresh server database
# ==========================================================================================


def _server_connect(admin_uri: str) -> Any:
    parts = urlsplit(admin_uri)
    if parts.scheme.startswith("postgres"):
        import psycopg

        return psycopg.connect(admin_uri, autocommit=True, connect_timeout=5)
    import pymysql

    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/") or None,
        autocommit=True,
        connect_timeout=5,
    )


def _server_execute(admin_uri: str, statement: str) -> None:
    with contextlib.closing(_server_connect(admin_uri)) as connection:
        cursor = connection.cursor()
        cursor.execute(statement)
        cursor.close()


def server_problem(admin_uri: str) -> str | None:
    """Why the server cannot be used (``None`` when it can)."""
    try:
        _server_execute(admin_uri, "SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure leaves the backend out
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


@contextlib.contextmanager
def fresh_store(backend: str, tmp: Path, label: str) -> Iterator[str]:
    """A new, empty, created store: a directory for SQLite, a new database on a server."""
    if backend == "sqlite":
        path = tmp / f"{label}-{uuid.uuid4().hex[:8]}"
        try:
            yield str(path)
        finally:
            shutil.rmtree(path, ignore_errors=True)
        return
    admin = SERVERS[backend]
    name = f"stepstore_bench_{uuid.uuid4().hex[:12]}"
    options = "" if backend == "postgresql" else " CHARACTER SET utf8mb4"
    _server_execute(admin, f"CREATE DATABASE {name}{options}")
    try:
        yield urlsplit(admin)._replace(path=f"/{name}").geturl()
    finally:
        force = " WITH (FORCE)" if backend == "postgresql" else ""
        _server_execute(admin, f"DROP DATABASE IF EXISTS {name}{force}")


def create_schema(uri: str) -> None:
    from stepstore.backends import open_backend

    open_backend(uri, create=True).close()


# ==========================================================================================
# 1. Ingest with concurrent writer processes
# ==========================================================================================


def worker(uri: str, points: int, index: int, world: int) -> None:
    """One writer process: init, report ready, wait for "go", log, finish, report. With
    ``world`` > 0 it is rank ``index`` of a job whose ranks share one run."""
    rng = np.random.default_rng(100 + index)
    keys = [f"metric/{k:02d}" for k in range(WIDTH)]
    pool = [
        dict(zip(keys, row, strict=True)) for row in rng.standard_normal((POOL, WIDTH)).tolist()
    ]
    if world:
        os.environ.update(RANK=str(index), WORLD_SIZE=str(world), STEPSTORE_RUN_ID="bench-job")
    run = ss.init(
        "bench-ingest", name=f"writer-{index}", store=uri, journal_slots=SLOTS, ranks="all"
    )
    log, mask, calls = run.log, POOL - 1, points // WIDTH
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        run.finish()
        return
    start = time.monotonic()
    for i in range(calls):
        log(pool[i & mask])
    logged = time.monotonic()
    run.finish()
    end = time.monotonic()
    info = run.writer_info()
    report = {
        "start": start,
        "logged": logged,
        "end": end,
        "points": calls * WIDTH,
        "waits": info["waits"],
        "wait_s": info["wait_seconds"],
        "run": run.id,
    }
    print(json.dumps(report), flush=True)


def ingest_once(
    uri: str, writers: int, points: int, journals: Path, as_ranks: bool
) -> dict[str, Any]:
    env = {**os.environ, "STEPSTORE_JOURNAL_DIR": str(journals / "journals")}
    env["STEPSTORE_ARRAY_STORE"] = str(journals / "arrays")
    world = str(writers if as_ranks else 0)
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE), "--worker", uri, str(points), str(i), world],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(writers)
    ]
    try:
        for p in procs:
            line = p.stdout.readline() if p.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"writer did not start: {line!r}")
        quiet()
        t0 = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode:
                raise RuntimeError(f"writer exited with {p.returncode}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    end = max(r["end"] for r in reports)
    total = sum(r["points"] for r in reports)
    return {
        "points": total,
        "wall_s": end - t0,
        "points_per_s": total / (end - t0),
        "start_skew_s": max(r["start"] for r in reports) - t0,
        "max_loop_s": max(r["logged"] - r["start"] for r in reports),
        "max_finish_s": max(r["end"] - r["logged"] for r in reports),
        "waits": sum(r["waits"] for r in reports),
        "wait_s": sum(r["wait_s"] for r in reports),
    }


def ingest_labels(cfg: Settings) -> list[str]:
    """The ingest cases: ``"N"`` writers of their own runs, ``"N ranks"`` of one run."""
    return [*map(str, cfg.writers), f"{cfg.ranks} ranks"]


def ingest(cfg: Settings, backends: list[str], tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rep in range(cfg.ingest_repeats):
        order = backends[rep % len(backends) :] + backends[: rep % len(backends)]
        for label in ingest_labels(cfg):
            writers, as_ranks = int(label.split()[0]), label.endswith("ranks")
            for backend in order:
                log_line(f"1 ingest: {backend}, {label}, rep {rep + 1}")
                with fresh_store(backend, tmp, "ingest") as uri:
                    if backend != "sqlite":
                        create_schema(uri)
                    result = ingest_once(uri, writers, cfg.points_per_writer, tmp, as_ranks)
                entry = out.setdefault(backend, {}).setdefault(label, {})
                for k, v in result.items():
                    entry.setdefault(k, []).append(v)
                log_line(f"  {result['points_per_s']:,.0f} points/s, {result['wall_s']:.2f} s")
    return out


# ==========================================================================================
# 2. Read path
# ==========================================================================================


def build_source(cfg: Settings, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """One SQLite store holding the key run, the view run and the filter runs."""
    store = tmp / "read-source"
    info: dict[str, Any] = {}
    rng = np.random.default_rng(4)

    log_line(f"2 read: recording the {cfg.key_points:,}-point key")
    t0 = perf()
    run = ss.init("bench-key", name="key", store=store, journal_slots=SLOTS)
    log = run.log
    for v in (
        2 * np.exp(-np.arange(cfg.key_points) / 3e5) + 0.1 * rng.standard_normal(cfg.key_points)
    ).tolist():
        log({"loss": v})
    run.finish()
    info["key_build_s"] = perf() - t0

    log_line(f"2 read: recording the {cfg.view_points:,}-point view series")
    t0 = perf()
    run = ss.init("bench-view", name="view", store=store, journal_slots=SLOTS)
    log = run.log
    block = 1_000_000
    for start in range(0, cfg.view_points, block):
        count = min(block, cfg.view_points - start)
        t = np.arange(start, start + count, dtype=np.float64)
        for v in (2 * np.exp(-t / 3e6) + 0.1 * rng.standard_normal(count)).tolist():
            log({"loss": v})
    run.finish()
    info["view_build_s"] = perf() - t0

    log_line(f"2 read: creating {cfg.filter_runs:,} small runs")
    t0 = perf()
    pick = random.Random(5)
    for i in range(cfg.filter_runs):
        params = {
            "lr": pick.choice([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
            "batch_size": pick.choice([32, 64, 128, 256]),
            "optimizer": pick.choice(["sgd", "adam", "adamw"]),
            "model": {"width": pick.choice([32, 64, 128, 256]), "depth": pick.randint(2, 8)},
            "seed": i,
        }
        tags = pick.sample(["baseline", "sweep", "ablation", "long"], k=pick.randint(0, 2))
        r = ss.init("bench-filter", store=store, params=params, tags=tags, fsync=False)
        for step in range(3):
            r.log({"loss": pick.random(), "acc": pick.random()}, step=step)
        r.finish()
    info["filter_build_s"] = perf() - t0
    return store, info


def reads(cfg: Settings, backends: list[str], tmp: Path) -> dict[str, Any]:
    from stepstore.io import copy_runs

    source, info = build_source(cfg, tmp)
    out: dict[str, Any] = {"build": info}
    with contextlib.ExitStack() as stack:
        uris: dict[str, str] = {"sqlite": str(source)}
        for backend in backends:
            if backend == "sqlite":
                continue
            uri = stack.enter_context(fresh_store(backend, tmp, "read"))
            create_schema(uri)
            log_line(f"2 read: copying the runs into {backend}")
            t0 = perf()
            with ss.open(source) as src, ss.open(uri) as dst:
                copy_runs(src, dst)
            info[f"copy_{backend}_s"] = perf() - t0
            uris[backend] = uri

        stores = {b: stack.enter_context(ss.open(uris[b])) for b in backends}
        key_ids = {b: stores[b].run("key").id for b in backends}
        view_ids = {b: stores[b].run("view").id for b in backends}
        tasks: dict[str, Callable[[str], Any]] = {
            "key_1m": lambda b: stores[b].run(key_ids[b]).scalars("loss"),
            "view_2000": lambda b: stores[b].run(view_ids[b]).scalars("loss", max_points=2000),
            "filter": lambda b: stores[b].runs(where=WHERE),
        }
        expected: dict[str, int] = {}
        for task, fn in tasks.items():
            for backend in backends:  # warm-up, and every backend returns the same rows
                rows = len(fn(backend))
                if expected.setdefault(task, rows) != rows:
                    raise AssertionError(
                        f"{task}: {backend} returned {rows} rows, not {expected[task]}"
                    )
        for rep in range(cfg.read_repeats):
            order = backends[rep % len(backends) :] + backends[: rep % len(backends)]
            log_line(f"2 read: rep {rep + 1}/{cfg.read_repeats}")
            for task, fn in tasks.items():
                for backend in order:
                    quiet()
                    t0 = perf()
                    fn(backend)
                    elapsed = perf() - t0
                    out.setdefault(backend, {}).setdefault(task, []).append(elapsed)
        out["rows"] = expected
    return out


# ==========================================================================================
# Report
# ==========================================================================================


def report(cfg: Settings, backends: list[str], missing: dict[str, str], res: dict[str, Any]) -> str:
    lines: list[str] = []
    env = res["env"]
    lines.append(
        f"Machine: {env['cpus']} CPUs ({env['platform']}), Python {env['python']}; load "
        f"average {env['loadavg_start'][0]:.2f} at the start, {res['loadavg_end'][0]:.2f} at "
        f"the end. PostgreSQL and MariaDB run on the same machine as the writers."
    )
    if missing:
        lines.append("")
        lines += [f"- **{b} left out**: {why}" for b, why in missing.items()]
    ing = res.get("ingest")
    if ing:
        lines += [
            "",
            f"### Ingest: aggregate points/s (median of {cfg.ingest_repeats}; "
            f"{cfg.points_per_writer:,} points per writer, {WIDTH} keys per call, "
            f"journal_slots=1<<22)",
            "",
        ]
        rows = []
        for w in ingest_labels(cfg):
            base = median(ing["sqlite"][w]["points_per_s"]) if "sqlite" in ing else None
            for b in backends:
                e = ing[b][w]
                pps = median(e["points_per_s"])
                lo, hi = spread(e["points_per_s"])
                target = "—"
                if b == "postgresql" and w == "16":
                    target = f"≥ 1M: {verdict(pps >= 1e6)}"
                rows.append(
                    [
                        w,
                        b,
                        f"{pps:,.0f}",
                        f"{lo:,.0f}–{hi:,.0f}",
                        ratio(pps / base) if base else "—",
                        num(median(e["wall_s"])),
                        num(median(e["max_loop_s"])),
                        num(median(e["max_finish_s"])),
                        f"{median(e['waits']):,.0f}",
                        target,
                    ]
                )
        lines.append(
            table(
                [
                    "writers",
                    "backend",
                    "points/s",
                    "min–max",
                    "÷ SQLite",
                    "wall s",
                    "slowest log loop s",
                    "slowest finish s",
                    "journal waits",
                    "target",
                ],
                rows,
            )
        )
    rd = res.get("read")
    if rd:
        labels = {
            "key_1m": f"one key, {cfg.key_points:,} points → pandas",
            "view_2000": f"2,000-point view of {cfg.view_points:,} points",
            "filter": f"filter {cfg.filter_runs:,} runs by params ({rd['rows']['filter']} match)",
        }
        lines += [
            "",
            f"### Read path: ms (warm, median of {cfg.read_repeats})",
            "",
        ]
        rows = []
        for task, label in labels.items():
            base = median(rd["sqlite"][task]) if "sqlite" in rd else None
            for b in backends:
                t = median(rd[b][task])
                lo, hi = spread(rd[b][task])
                r = t / base if base else None
                target = "—" if b == "sqlite" or r is None else f"≤ 2×: {verdict(r <= 2)}"
                rows.append(
                    [label, b, num(t * 1e3), f"{num(lo * 1e3)}–{num(hi * 1e3)}", ratio(r), target]
                )
        lines.append(table(["read", "backend", "ms", "min–max", "÷ SQLite", "target"], rows))
        build = rd["build"]
        lines += [
            "",
            "Setup (not timed above): "
            + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in build.items())
            + ".",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, one ingest repeat")
    parser.add_argument("--only", help="sections to run: 1 (ingest), 2 (read); default both")
    parser.add_argument(
        "--backends", default="sqlite,postgresql,mariadb", help="comma-separated backends"
    )
    parser.add_argument("--points", type=int, help="points per writer (overrides the default)")
    parser.add_argument("--tmp", help="directory for the temporary stores")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        uri, points, index, world = args.worker
        worker(uri, int(points), int(index), int(world))
        return

    cfg = Settings.quick() if args.quick else Settings()
    if args.points:
        cfg.points_per_writer = args.points
    sections = {int(s) for s in args.only.split(",")} if args.only else {1, 2}
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    missing = {}
    backends = []
    for b in wanted:
        problem = None if b == "sqlite" else server_problem(SERVERS[b])
        if problem:
            missing[b] = problem
            log_line(f"{b} left out: {problem}")
        else:
            backends.append(b)
    results: dict[str, Any] = {
        "env": environment(),
        "settings": asdict(cfg),
        "quick": args.quick,
        "servers": {b: SERVERS[b] for b in backends if b != "sqlite"},
        "missing": missing,
    }
    started = perf()
    tmp = Path(tempfile.mkdtemp(prefix="stepstore-bench-backends-", dir=args.tmp))
    try:
        if 1 in sections:
            t0 = perf()
            results["ingest"] = ingest(cfg, backends, tmp)
            results.setdefault("section_s", {})["ingest"] = perf() - t0
        if 2 in sections:
            t0 = perf()
            results["read"] = reads(cfg, backends, tmp)
            results.setdefault("section_s", {})["read"] = perf() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["total_s"] = perf() - started
    results["loadavg_end"] = os.getloadavg()
    text = report(cfg, backends, missing, results)
    header = textwrap.dedent(
        f"""\
        ## stepstore backends{" (--quick)" if args.quick else ""}

        Total {results["total_s"] / 60:.1f} min. A 2-core shared VM: the writer processes,
        their writer threads and the database server all compete for the same 2 cores, so
        with 4 and 16 writers the clients take CPU from the server (and vice versa). Figures
        are medians; ratios are against SQLite in the same table.
        """
    )
    print(header + "\n" + text)
    if not args.quick and not args.only:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "backends.md").write_text(header + "\n" + text + "\n")
        (RESULTS / "backends.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        log_line(f"wrote {RESULTS / 'backends.md'} and backends.json")


if __name__ == "__main__":
    main()
