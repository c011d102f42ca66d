"""Capture accounting: the run's ``capture`` metadata, its summary and ``stepstore show``
agree for reduced tensors and ``ss.torch.watch``: every key listed has the points its
series holds, and a tensor stored only as its reduction is listed as its outputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

import stepstore as ss
from stepstore.cli import main

STATS = ("mean", "std", "min", "max", "norm", "zeros")


def stored_counts(view: ss.RunView) -> dict[str, int]:
    return {key: stats["count"] for key, stats in view.summary.items()}


def recorded_counts(view: ss.RunView) -> dict[str, int]:
    return {key: info["recorded"] for key, info in view.capture["keys"].items()}


def test_reduced_tensors_are_accounted_as_their_outputs(new_run, store_path):
    run = new_run()
    run.reduce("act/*", "stats")
    run.reduce("hist", "histogram")
    run.policy("act/*", ss.every(2))
    for step in range(5):
        run.log({"act/a": np.full(3, float(step)), "hist": np.arange(4.0), "loss": 1.0})
    run.finish()
    view = ss.open(store_path).run(run.id)
    expected = {
        **{f"act/a/{name}": 3 for name in STATS},
        "hist/histogram": 5,
        "hist/histogram_edges": 5,
        "loss": 5,
    }
    assert stored_counts(view) == expected
    assert recorded_counts(view) == expected
    keys = view.capture["keys"]
    assert keys["act/a/mean"] == {
        "policy": "every(2)",
        "recorded": 3,
        "skipped": 2,
        "from": "act/a",
    }
    assert keys["hist/histogram"] == {"policy": None, "recorded": 5, "skipped": 0, "from": "hist"}
    assert keys["loss"] == {"policy": None, "recorded": 5, "skipped": 0}


def test_a_reduced_key_whose_points_were_all_skipped_is_listed_itself(new_run, store_path):
    run = new_run()
    run.reduce("act", "stats")
    run.policy("act", ss.at(100))
    for _ in range(3):
        run.log({"act": np.ones(2)})
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.summary == {}
    assert view.capture["keys"] == {"act": {"policy": "at(100)", "recorded": 0, "skipped": 3}}


def test_accounting_goes_on_across_a_resume(store_path):
    first = ss.init("t", store=store_path, flush_interval=0.05)
    first.reduce("act", "stats").reduce("hist", "histogram").policy("act", ss.every(2))
    for _ in range(3):  # steps 0, 1, 2
        first.log({"act": np.ones(2), "hist": np.ones(2)})
    first.finish()
    again = ss.init("t", store=store_path, resume=first.id, flush_interval=0.05)
    again.reduce("act", "stats").reduce("hist", "histogram").policy("act", ss.every(2))
    for _ in range(2):  # steps 3, 4
        again.log({"act": np.ones(2), "hist": np.ones(2)})
    again.finish()
    view = ss.open(store_path).run(first.id)
    assert stored_counts(view) == recorded_counts(view)
    assert recorded_counts(view)["act/mean"] == 3 and recorded_counts(view)["hist/histogram"] == 5
    assert view.capture["keys"]["act/norm"]["skipped"] == 2


def test_system_metrics_count_what_they_recorded(new_run, store_path):
    run = new_run(system=0.05)
    run.log({"loss": 1.0})
    run.finish()
    view = ss.open(store_path).run(run.id)
    system = {k: v for k, v in recorded_counts(view).items() if k.startswith("system/")}
    assert system and all(count >= 1 for count in system.values())
    assert system == {k: v for k, v in stored_counts(view).items() if k.startswith("system/")}


def test_watch_with_reduce_agrees_with_the_summary_and_show(new_run, store_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    run = new_run()
    run.reduce("activations/*", "stats")
    ss.torch.watch(run, model, what=("activations", "gradients"), reduce="stats")
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        with torch.no_grad():
            model(torch.randn(2, 4))  # an evaluation forward at the same step
        run.log({"loss": 1.0})
    run.finish()
    view = ss.open(store_path).run(run.id)
    sources = [f"activations/{n}" for n in "012"]
    sources += [f"gradients/{n}.{p}" for n in "02" for p in ("weight", "bias")]
    expected = {f"{s}/{name}": 3 for s in sources for name in STATS} | {"loss": 3}
    for source in sources[:3]:  # two forwards per step: both are recorded
        expected.update({f"{source}/{name}": 6 for name in STATS})
    assert stored_counts(view) == expected
    assert recorded_counts(view) == expected

    result = CliRunner().invoke(main, ["show", run.id, "--store", str(store_path)])
    assert result.exit_code == 0, result.output
    rows = re.findall(r"^│ (\S+)\s+│ (\d+)\s+│", result.output, re.MULTILINE)
    assert dict(rows) == {key: str(count) for key, count in expected.items()}
    assert re.search(r"^activations/\*\s+stats\s*$", result.output, re.MULTILINE)
    assert re.search(r"^gradients/\*\s+stats\s*$", result.output, re.MULTILINE)


def test_show_folds_a_reduced_key_of_a_run_recorded_before(new_run, store_path):
    run = new_run()
    run.reduce("act", "stats")
    run.log({"act": np.ones(2)})
    run.finish()
    old = {  # what runs recorded before listed: the source and outputs that counted 0
        "keys": {"act": {"policy": None, "recorded": 1, "skipped": 0}}
        | {f"act/{name}": {"policy": None, "recorded": 0, "skipped": 0} for name in STATS}
    }
    with ss.open(store_path) as store:
        store.backend.update_run(run.id, capture=old)
    result = CliRunner().invoke(main, ["show", run.id, "--store", str(store_path)])
    assert result.exit_code == 0, result.output
    rows = re.findall(r"^│ (\S+)\s+│ (\d+)\s+│", result.output, re.MULTILINE)
    assert rows == [(f"act/{name}", "1") for name in sorted(STATS)]
