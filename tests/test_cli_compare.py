"""Comparing runs from the command line: ``runs`` (varying params, metrics, sort, limit, JSON,
CSV, 80 columns) and ``diff``; and the comparison pieces behind them."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

import stepstore as ss
from stepstore.cli import main
from stepstore.query.compare import Metric, default_metrics, diverge
from stepstore.series.chunk import Columns

from .conftest import FAST

#: What makes rich see an 80-column terminal.
TERMINAL_80 = {"TTY_COMPATIBLE": "1", "COLUMNS": "80"}


def cli(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)


def plain(text: str) -> str:
    """``text`` without terminal styles (ANSI escape sequences)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.fixture
def sweep(store_path: Path) -> Path:
    """Three finished runs of a learning-rate sweep; ``lr3`` lacks ``val/acc``."""
    for name, lr, accs in (("lr1", 0.1, [0.5, 0.7]), ("lr2", 0.01, [0.6, 0.9]), ("lr3", 1.0, [])):
        params = {"lr": lr, "model": {"width": 64, "act": "relu"}, "seed": 0}
        if name == "lr2":
            params["warmup"] = True
        with ss.init("sweep", name=name, params=params, store=store_path, **FAST) as run:
            for step in range(4):
                run.log({"loss": lr * (4 - step), "acc": step / 4, "system/cpu": 50.0}, step=step)
                run.log({"gradients/w/norm": 1.0}, step=step)
            for epoch, acc in enumerate(accs):
                run.log({"val/acc": acc, "val/loss": 1 - acc}, step=2 * epoch + 1, epoch=epoch)
    return store_path


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a comparison table, split on runs of two or more spaces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"}) + 1
    return [
        [c.strip() for c in line.strip().split("  ") if c] for line in lines[start:] if line.strip()
    ]


def test_runs_shows_varying_params_and_the_default_metrics(sweep):
    result = cli("runs", "--store", sweep)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "3 runs · project sweep · status finished"
    header = lines[1].split()
    assert header == ["id", "name", "created", "val/acc", "val/loss", "loss", "lr", "warmup"]
    names = [row[1].strip() for row in table_rows(result.stdout)]
    assert names == ["lr1", "lr2", "lr3"]
    rows = {row[1].strip(): [c.strip() for c in row[3:]] for row in table_rows(result.stdout)}
    assert rows["lr1"] == ["0.7", "0.3", "0.1", "0.1", "-"]
    assert rows["lr2"] == ["0.9", "0.1", "0.01", "0.01", "true"]
    assert rows["lr3"] == ["-", "-", "1", "1.0", "-"]


def test_runs_metrics_sort_and_limit(sweep):
    result = cli(
        "runs",
        "--metric",
        "val/acc:max",
        "-m",
        "loss:count",
        "--sort",
        "-val/acc:max",
        "--store",
        sweep,
    )
    assert result.exit_code == 0, result.output
    over, under = result.stdout.splitlines()[1:3]  # a metric's key over its statistic
    assert over.split() == ["val/acc", "loss"]
    assert under.split()[3:] == ["max", "count", "lr", "warmup"]
    rows = table_rows(result.stdout)
    assert [(r[1].strip(), r[3].strip(), r[4].strip()) for r in rows] == [
        ("lr2", "0.9", "4"),
        ("lr1", "0.7", "4"),
        ("lr3", "-", "4"),  # no value: last in either direction
    ]

    def names(*args: str) -> list[str]:
        runs = json.loads(cli("runs", "--json", "--store", sweep, *args).stdout)
        return [r["name"] for r in runs]

    assert names("--sort", "params.lr") == ["lr2", "lr1", "lr3"]
    assert names("--sort", "-params.lr", "--limit", "2") == ["lr3", "lr1"]
    assert names("--sort", "val/acc:max") == ["lr1", "lr2", "lr3"]
    assert names("--sort", "params.warmup") == ["lr2", "lr1", "lr3"]
    assert names("--sort", "-name") == ["lr3", "lr2", "lr1"]
    assert names("--limit", "1") == ["lr1"]
    # a sort by a metric not asked for shows it too
    over, under = cli("runs", "--sort", "acc:min", "--store", sweep).stdout.splitlines()[1:3]
    assert over.split() == ["acc"]
    assert under.split()[3:7] == ["val/acc", "val/loss", "loss", "min"]


def test_runs_csv(sweep):
    result = cli("runs", "--csv", "-m", "val/acc:max", "--sort", "name", "--store", sweep)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == [
        "id",
        "name",
        "project",
        "status",
        "created",
        "ended",
        "duration",
        "tags",
        "params.lr",
        "params.model.width",
        "params.model.act",
        "params.seed",
        "params.warmup",
        "metrics.val/acc.max",
    ]
    store = ss.open(sweep)
    for row, name in zip(rows[1:], ["lr1", "lr2", "lr3"], strict=True):
        view = store.run(name)
        assert row[:4] == [view.id, name, "sweep", "finished"]
        assert row[4].endswith("+00:00") and float(row[6]) == view.ended - view.created
        assert row[7:] == [
            "[]",
            repr(view.params["lr"]),
            "64",
            "relu",
            "0",
            {"lr1": "", "lr2": "true", "lr3": ""}[name],
            {"lr1": "0.7", "lr2": "0.9", "lr3": ""}[name],
        ]


def test_runs_fits_80_columns_on_a_terminal(sweep):
    result = cli(
        "runs",
        "-m",
        "val/acc:max",
        "-m",
        "val/loss:min",
        "-m",
        "loss",
        "-m",
        "acc:max",
        "--store",
        sweep,
        env=TERMINAL_80,
    )
    assert result.exit_code == 0, result.output
    lines = plain(result.stdout).splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[-1].rstrip() == "not shown (too wide): warmup"  # the params that do not fit
    for run in ss.open(sweep).runs():
        assert run.id in result.stdout  # ids are never cut


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--metric", "val/ac:max"],
            "error: metric 'val/ac:max': no listed run has a scalar key 'val/ac'; scalar keys: "
            "acc, gradients/w/norm, loss, system/cpu, val/acc, val/loss (a metric is KEY or "
            "KEY:last|min|max|count)\n",
        ),
        (
            ["--sort", "params.width"],
            "error: sort 'params.width': not a run field, param or metric of the listed runs; "
            "fields: id, name, project, status, created, ended, duration; params: params.lr, "
            "params.model.width, params.model.act, params.seed, params.warmup; scalar keys: "
            "acc, gradients/w/norm, loss, system/cpu, val/acc, val/loss (a metric is KEY or "
            "KEY:last|min|max|count; a leading - sorts in descending order)\n",
        ),
        (["--metric", "loss:"], "error: metric 'loss:': expected KEY or KEY:last|min|max|count\n"),
    ],
)
def test_unknown_metric_or_sort_names_the_known_ones(sweep, args, message):
    result = cli("runs", *args, "--store", sweep)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == message


def test_json_and_csv_together_is_a_usage_error(sweep):
    result = cli("runs", "--json", "--csv", "--store", sweep)
    assert result.exit_code == 2
    assert "give --json or --csv, not both" in result.stderr


def test_default_metrics_prefer_shared_evaluation_keys_and_losses(sweep):
    store = ss.open(sweep)
    runs = store.runs(with_keys=True)
    assert default_metrics(runs) == [Metric("val/acc"), Metric("val/loss"), Metric("loss")]
    # lr3 has no val/* keys: among its keys, the loss comes first; machine keys never
    assert default_metrics([store.run("lr3")], 5) == [Metric("loss"), Metric("acc")]
    assert Metric.parse("a:b") == Metric("a:b")
    assert Metric.parse("val/acc:count") == Metric("val/acc", "count")


@pytest.fixture
def pair(store_path: Path) -> Path:
    """Runs ``a`` and ``b`` that agree up to step 2 and part at step 3."""
    for name, lr, late in (("a", 0.1, 1.0), ("b", 0.2, 1.5)):
        params = {"lr": lr, "width": 64} | ({"note": "x"} if name == "b" else {})
        with ss.init("p", name=name, params=params, store=store_path, **FAST) as run:
            for step in range(5):
                value = 1.0 / (step + 1) if step < 3 else late
                run.log({"loss": value, "same": float(step), f"only/{name}": 0.0}, step=step)
            run.log({"tiny": 1.0 + (1e-9 if name == "b" else 0.0)}, step=0)
    return store_path


def test_diff_for_people(pair):
    result = cli("diff", "a", "b", "--store", pair, env=TERMINAL_80)
    assert result.exit_code == 0, result.output
    out = plain(result.stdout)
    assert max(len(line) for line in out.splitlines()) <= 80
    a, b = ss.open(pair).run("a"), ss.open(pair).run("b")
    assert f"A  a ({a.id}) · p · finished" in out and f"B  b ({b.id}) · p · finished" in out
    assert "only in A: only/a\n" in out and "only in B: only/b\n" in out
    assert "lr     0.1  0.2" in out and "note   -    x" in out
    assert "width" not in out
    summary = out[out.index("summary") : out.index("where the series part")]
    assert ["loss", "A", "5", "1", "0.333333", "1"] in table_rows(summary)
    assert ["B", "5", "1.5", "0.333333", "1.5"] in table_rows(summary)
    parted = out[out.index("where the series part (tolerance: relative 1e-06)") :]
    assert table_rows(parted) == [
        ["loss", "step 3", "1", "1.5"],
        ["same", "same"],
        ["tiny", "same"],
    ]


def test_diff_json_and_tolerances(pair):
    result = cli("diff", "a", "b", "--json", "--abs-tolerance", "0.6", "--store", pair)
    data = json.loads(result.stdout)
    assert data["params"] == {"lr": [0.1, 0.2], "note": [None, "x"]}
    assert (data["only_a"], data["only_b"]) == (["only/a"], ["only/b"])
    assert data["series"] == [
        {"key": "loss", "step": None, "a": None, "b": None, "common": 5, "same_steps": True},
        {"key": "same", "step": None, "a": None, "b": None, "common": 5, "same_steps": True},
        {"key": "tiny", "step": None, "a": None, "b": None, "common": 1, "same_steps": True},
    ]
    strict = json.loads(
        cli("diff", "a", "b", "--json", "--tolerance", "0", "-k", "t*", "--store", pair).stdout
    )
    assert strict["series"] == [
        {"key": "tiny", "step": 0, "a": 1.0, "b": 1.0 + 1e-9, "common": 1, "same_steps": True}
    ]
    missing = cli("diff", "a", "nope", "--store", pair)
    assert missing.exit_code == 1
    assert missing.stderr == f"error: no run with id or name 'nope' in {pair}\n"


def columns(steps: list[int], values: list[float]) -> Columns:
    n = len(steps)
    return Columns(
        np.array(steps, np.int64),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
        np.array(values, np.float64),
    )


def test_diverge_treats_nan_and_infinities_exactly():
    nan, inf = math.nan, math.inf
    same = diverge("k", columns([0, 1, 2], [nan, inf, -inf]), columns([0, 1, 2], [nan, inf, -inf]))
    assert (same.step, same.common, same.same_steps) == (None, 3, True)
    assert diverge("k", columns([0, 1], [1.0, inf]), columns([0, 1], [1.0, 5.0])).step == 1
    assert diverge("k", columns([0, 1], [nan, 2.0]), columns([0, 1], [1.0, 2.0])).step == 0
    other_steps = diverge("k", columns([0, 2, 4], [1.0, 2, 3]), columns([0, 1, 2], [1.0, 9, 2]))
    assert (other_steps.step, other_steps.common, other_steps.same_steps) == (None, 2, False)
    repeated = diverge("k", columns([0, 0, 1], [5.0, 1.0, 2.0]), columns([0, 1], [1.0, 2.0]))
    assert repeated.step is None  # the last value logged at a step counts


@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40),
    st.data(),
)
def test_diverge_finds_the_first_change_beyond_the_tolerance(values, data):
    steps = list(range(len(values)))
    assert diverge("k", columns(steps, values), columns(steps, values)).step is None
    where = data.draw(st.integers(0, len(values) - 1))
    changed = list(values)
    changed[where] = values[where] + max(1.0, abs(values[where])) * 1e-3
    found = diverge("k", columns(steps, values), columns(steps, changed), rel_tol=1e-6)
    assert (found.step, found.a, found.b) == (where, values[where], changed[where])
    loose = diverge("k", columns(steps, values), columns(steps, changed), 0.01, abs_tol=0.01)
    assert loose.step is None
