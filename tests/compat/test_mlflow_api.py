"""The drop-in MLflow API: one script written for ``import mlflow`` run both ways; what
MLflow's own client reads back is what stepstore stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

import stepstore as ss
import stepstore.compat.mlflow as ss_mlflow
from stepstore.errors import UnsupportedError

from ..conftest import run_python

pytest.importorskip("matplotlib")
mlflow = pytest.importorskip("mlflow")

SCRIPT = """
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
{import_line}


def main(workdir):
    mlflow.set_experiment("demo")
    with mlflow.start_run(run_name="baseline", tags={{"team": "vision"}}) as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({{"batch_size": 32, "optimizer": "adam", "nesterov": True}})
        mlflow.set_tag("stage", "dev")
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step,
                              timestamp=1_700_000_000_000 + 250 * step)
            mlflow.log_metrics({{"acc": 0.1 * step, "lr": np.float32(0.01)}}, step=step)
        mlflow.log_metric("once", 3.5)
        mlflow.log_metric("once", 4.5, timestamp=1_600_000_000_123)
        mlflow.log_param("late", 7)
        mlflow.set_tags({{"best": "yes", "epochs": 5}})
        path = os.path.join(workdir, "notes.bin")
        with open(path, "wb") as f:
            f.write(bytes(range(256)) * 3)
        mlflow.log_artifact(path)
        mlflow.log_dict({{"a": 1, "b": [1, 2], "c": {{"d": "x"}}}}, "config.json")
        mlflow.log_dict({{"a": 1, "b": [1, 2]}}, "config.yaml")
        mlflow.log_text("hello é\\nline 2", "readme.md")
        figure = plt.figure(figsize=(2, 1), dpi=30)
        plt.plot([0, 1], [1, 0])
        mlflow.log_figure(figure, "curve.png")
        with mlflow.start_run(run_name="child", nested=True):
            mlflow.log_metric("child_metric", 2.0, step=1)
        assert mlflow.active_run().info.run_id == run.info.run_id
    assert mlflow.active_run() is None
    try:
        with mlflow.start_run(run_name="broken"):
            mlflow.log_metric("x", 1.0, step=3)
            raise ValueError("boom")
    except ValueError:
        pass
    mlflow.start_run(run_name="killed")
    mlflow.log_param("p", "v")
    mlflow.end_run(status="KILLED")
"""

NAMES = ("baseline", "child", "broken", "killed")
#: The timestamps the script gives (ms); the others are the time of the call.
GIVEN = {1_700_000_000_000 + 250 * step for step in range(5)} | {1_600_000_000_123}


def run_script(import_line: str, workdir: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(SCRIPT.format(import_line=import_line), namespace)  # the user's script, verbatim
    namespace["main"](str(workdir))


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """MLflow's runs (by name) read with its client, stepstore's run views (by name)."""
    root = tmp_path_factory.mktemp("mlflow")
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("MLFLOW_TRACKING_URI", (root / "mlruns").as_uri())
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        mp.setenv("STEPSTORE_URI", str(root / "store"))
        mp.chdir(root)
        run_script("import mlflow", root)
        began = time.time()
        run_script("import stepstore.compat.mlflow as mlflow", root)
        ended = time.time()
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name("demo")
        theirs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    finally:
        mp.undo()
    ours = {r.name: r for r in ss.open(root / "store").runs(project="demo")}
    return {"theirs": theirs, "ours": ours, "client": client, "window": (began, ended)}


def mlflow_params(view: ss.RunView) -> dict[str, str]:
    """A stepstore run's params as MLflow keeps them: strings, including later ones."""
    params = dict(view.params)
    if "params" in view.keys():
        for entry in view.record_entries("params"):
            params.update(entry.fields)
    return {key: str(value) for key, value in params.items()}


def mlflow_tags(view: ss.RunView) -> dict[str, str]:
    tags = dict(tag.split("=", 1) for tag in view.tags)
    if "tags" in view.keys():
        for entry in view.record_entries("tags"):
            tags.update(entry.fields)
    return tags


def test_the_same_runs_in_the_experiment_project(both: dict[str, Any]) -> None:
    assert set(both["theirs"]) == set(both["ours"]) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_status(both: dict[str, Any], name: str) -> None:
    theirs = both["theirs"][name].info.status
    assert both["ours"][name].status == theirs.lower()
    assert theirs == {"child": "FINISHED", "broken": "FAILED", "killed": "KILLED"}.get(
        name, "FINISHED"
    )


@pytest.mark.parametrize("name", NAMES)
def test_params(both: dict[str, Any], name: str) -> None:
    theirs = both["theirs"][name].data.params
    assert mlflow_params(both["ours"][name]) == theirs


def test_params_given_before_the_first_metric_are_the_runs_params(both: dict[str, Any]) -> None:
    baseline = both["ours"]["baseline"]
    assert baseline.params == {"lr": 0.01, "batch_size": 32, "optimizer": "adam", "nesterov": True}
    assert [e.fields for e in baseline.record_entries("params")] == [{"late": 7}]
    assert both["ours"]["killed"].params == {"p": "v"}  # ended before anything else


@pytest.mark.parametrize("name", NAMES)
def test_tags(both: dict[str, Any], name: str) -> None:
    theirs = dict(both["theirs"][name].data.tags)
    ours = mlflow_tags(both["ours"][name])
    if name == "child":  # each tool's own id of the parent
        assert theirs.pop("mlflow.parentRunId") == both["theirs"]["baseline"].info.run_id
        assert ours.pop("mlflow.parentRunId") == both["ours"]["baseline"].id
    user_tags = {k: v for k, v in theirs.items() if not k.startswith("mlflow.")}
    assert ours == user_tags
    if name == "baseline":
        assert both["ours"]["baseline"].tags == ["team=vision", "stage=dev"]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("baseline", "loss"),
        ("baseline", "acc"),
        ("baseline", "lr"),
        ("baseline", "once"),
        ("child", "child_metric"),
        ("broken", "x"),
    ],
)
def test_metric_histories(both: dict[str, Any], name: str, key: str) -> None:
    history = both["client"].get_metric_history(both["theirs"][name].info.run_id, key)
    frame = both["ours"][name].scalars(key)
    assert history
    assert list(frame.step) == [m.step for m in history]
    assert list(frame.value) == [m.value for m in history]  # float64, as MLflow keeps them
    stamps = [t.value // 1000 for t in frame.time]  # µs
    began, ended = both["window"]
    for ours, theirs in zip(stamps, history, strict=True):
        if theirs.timestamp in GIVEN:
            assert ours == theirs.timestamp * 1000  # the same, to the ms
        else:
            assert round(began * 1e6) <= ours <= round(ended * 1e6)


def test_given_timestamps_are_kept(both: dict[str, Any]) -> None:
    loss = both["ours"]["baseline"].scalars("loss")
    assert [t.value // 1_000_000 for t in loss.time] == [
        1_700_000_000_000 + 250 * s for s in range(5)
    ]
    once = both["ours"]["baseline"].scalars("once")
    assert (list(once.step), once.time.iloc[1].value // 1_000_000) == ([0, 0], 1_600_000_000_123)


@pytest.mark.parametrize(
    "artifact", ["notes.bin", "config.json", "config.yaml", "readme.md", "curve.png"]
)
def test_artifacts_have_mlflows_bytes(both: dict[str, Any], artifact: str) -> None:
    folder = Path(urlparse(both["theirs"]["baseline"].info.artifact_uri).path)
    theirs = (folder / artifact).read_bytes()
    assert both["ours"]["baseline"].artifact(artifact) == theirs
    assert set(both["ours"]["baseline"].artifacts()) == {p.name for p in folder.iterdir()}


def test_info_and_active_run(store_path: Path) -> None:
    ss_mlflow.set_experiment("info")
    with ss_mlflow.start_run(run_name="r", store=store_path) as active:
        assert ss_mlflow.active_run() is active
        assert (active.info.run_name, active.info.experiment_id) == ("r", "info")
        assert active.started is None  # nothing recorded yet
        run_id = active.info.run_id  # asking for the id creates it
        assert active.started is not None and active.started.id == run_id
        assert active.info.status == "RUNNING"
    assert (active.info.status, ss_mlflow.active_run()) == ("FINISHED", None)
    assert ss.open(store_path).run(run_id).status == "finished"


def test_start_run_with_run_id_continues_it(store_path: Path) -> None:
    ss_mlflow.set_experiment("resume")
    with ss_mlflow.start_run(store=store_path) as first:
        ss_mlflow.log_metric("m", 1.0, step=0)
    with ss_mlflow.start_run(run_id=first.info.run_id, store=store_path) as again:
        ss_mlflow.log_metric("m", 2.0, step=1)
        ss_mlflow.set_tag("resumed", True)
        ss_mlflow.log_param("late", 0.5)
    assert again.info.run_id == first.info.run_id
    view = ss.open(store_path).run(first.info.run_id)
    assert view.scalars("m").value.tolist() == [1.0, 2.0]
    assert [e.fields for e in view.record_entries("tags")] == [{"resumed": "True"}]
    assert [e.fields for e in view.record_entries("params")] == [{"late": 0.5}]


def test_a_log_call_without_a_run_starts_one(store_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STEPSTORE_URI", str(store_path))
    ss_mlflow.set_experiment("auto")
    ss_mlflow.log_metric("m", 1.0)
    active = ss_mlflow.active_run()
    assert active is not None
    ss_mlflow.end_run()
    ss_mlflow.end_run()  # nothing active: does nothing, as in MLflow
    assert ss.open(store_path).run(active.info.run_id).project == "auto"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: ss_mlflow.log_param("lr", 0.2),
            ss.InvalidArgumentError,
            r"log_param: param 'lr' was logged as 0.1; MLflow params cannot change \(got 0.2\)",
        ),
        (
            lambda: ss_mlflow.start_run(),
            ss.RunStateError,
            r"start_run: run bad is already active; end it with end_run\(\) first, or pass "
            r"nested=True",
        ),
        (
            lambda: ss_mlflow.log_artifact(__file__, artifact_path="code"),
            ss.InvalidArgumentError,
            r"artifact_path='code': stepstore stores artifacts by file name, without folders; "
            r"leave it out \(the file is stored as 'test_mlflow_api.py'\)",
        ),
        (
            lambda: ss_mlflow.log_dict({}, "dir/d.json"),
            ss.InvalidArgumentError,
            r"log_dict: artifact_file='dir/d.json': .* expected a name like 'd.json'",
        ),
        (
            lambda: ss_mlflow.log_metric("m", 1.0, timestamp=1.5),
            ss.InvalidArgumentError,
            r"timestamp=1.5: expected milliseconds since the Unix epoch",
        ),
        (
            lambda: ss_mlflow.log_metric("m", 1.0, run_id="other"),
            ss.InvalidArgumentError,
            r"run_id='other' is not the active run",
        ),
        (
            lambda: ss_mlflow.end_run("DONE"),
            ss.InvalidArgumentError,
            r"end_run: status='DONE': expected one of FINISHED, FAILED, KILLED",
        ),
        (
            lambda: ss_mlflow.set_tracking_uri("http://localhost:5000"),
            UnsupportedError,
            r"set_tracking_uri is not supported by stepstore: runs go to a stepstore store: "
            r"start_run\(store=URI\)",
        ),
        (lambda: ss_mlflow.autolog(), NotImplementedError, r"autolog is not supported"),
        (lambda: ss_mlflow.log_image(None), NotImplementedError, r"log_image is not supported"),
        (
            lambda: ss_mlflow.log_figure(object(), "f.png"),
            NotImplementedError,
            r"log_figure of a object",
        ),
        (
            lambda: ss_mlflow.pytorch,
            AttributeError,
            r"stepstore.compat.mlflow has no 'pytorch': it offers MLflow's fluent logging API",
        ),
    ],
)
def test_bad_or_unsupported_calls_say_so(
    store_path: Path, call: Any, error: type[Exception], message: str
) -> None:
    with ss_mlflow.start_run(run_name="bad", store=store_path):
        ss_mlflow.log_param("lr", 0.1)
        with pytest.raises(error, match=message):
            call()
    assert ss_mlflow.active_run() is None


def test_importing_it_imports_no_mlflow() -> None:
    result = run_python(
        """
        import sys
        import stepstore.compat.mlflow
        print(sorted(m for m in ("mlflow", "matplotlib", "yaml", "torch") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_run_left_active_at_exit_keeps_its_params(store_path: Path) -> None:
    result = run_python(
        f"""
        import stepstore.compat.mlflow as mlflow
        mlflow.start_run(run_name="left", store={str(store_path)!r})
        mlflow.log_params({{"a": 1}})
        mlflow.set_tag("t", "x")
        """
    )
    assert result.returncode == 0, result.stderr
    view = ss.open(store_path).run("left")
    assert (view.project, view.params, view.tags, view.status) == (
        "Default",
        {"a": 1},
        ["t=x"],
        "incomplete",
    )
