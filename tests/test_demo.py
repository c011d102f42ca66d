"""The demo (``stepstore demo``): a real CNN training run recorded and read back."""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from rich.console import Console

import stepstore as ss

from .conftest import run_python

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from stepstore import demo  # noqa: E402 - only once torch and sklearn are known to be there

EPOCHS = 2


class Recorded(NamedTuple):
    store: Path
    run_id: str
    view: ss.RunView
    output: str
    per_epoch: int
    threads: int
    printed: str


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """One demo run of ``EPOCHS`` epochs, shared by the tests of this module."""
    store = tmp_path_factory.mktemp("demo") / "store"
    console = Console(file=io.StringIO(), width=100)
    threads = torch.get_num_threads()
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(io.StringIO()) as printed,  # the progress line's output
    ):
        patch.setenv("PATH", os.defpath)  # as after `make demo`: the .venv is not activated
        run_id = demo.main(store=store, epochs=EPOCHS, console=console)
    with ss.open(store) as opened:
        view = opened.run(run_id)
        per_epoch = math.ceil(view.params["data"]["train"] / demo.BATCH_SIZE)
        yield Recorded(
            store, run_id, view, console.file.getvalue(), per_epoch, threads, printed.getvalue()
        )


def test_run_is_finished_with_its_metadata(recorded: Recorded) -> None:
    view = recorded.view
    assert view.id == recorded.run_id
    assert view.status == "finished"
    assert view.project == "digits-demo"
    assert view.tags == ["demo"]
    assert view.params["epochs"] == EPOCHS
    assert view.params["batch_size"] == demo.BATCH_SIZE
    assert view.params["model"]["width"] == demo.WIDTH
    assert view.params["data"]["train"] + view.params["data"]["val"] == 1797
    assert view.keys("scalar")[:4] == [
        "acc",
        "grad_norm",
        "gradients/0.bias/max",
        "gradients/0.bias/mean",
    ]
    assert {"loss", "lr", "val/acc", "val/loss"} <= set(view.keys("scalar"))
    assert view.keys("tensor") == [f"activations/{demo.RAW_LAYER}"]
    assert view.keys("image") == ["val/samples"]


def test_activations_gradients_and_prediction_grids(recorded: Recorded) -> None:
    view = recorded.view
    iterations = EPOCHS * recorded.per_epoch
    activations = view.tensor(f"activations/{demo.RAW_LAYER}")
    training_steps = [s for s in activations.steps.tolist() if s < iterations]
    assert training_steps == list(range(0, iterations, demo.WATCH_EVERY))
    assert activations.shape[2:] == (2 * demo.WIDTH, 8, 8)
    norms = view.scalars(f"gradients/{demo.RAW_LAYER}.weight/norm")
    assert norms["step"].tolist() == list(range(0, iterations, demo.WATCH_EVERY))
    assert (norms["value"] > 0).all()
    images = view.images("val/samples")
    assert [i.step for i in images] == [(e + 1) * recorded.per_epoch - 1 for e in range(EPOCHS)]
    assert images[0].array.dtype == np.uint8 and images[0].array.ndim == 2
    assert images[-1].caption.startswith("predicted: ")
    assert 'r.tensor("activations/2")[:, 0, 5, 3, 3]' in recorded.output


def test_every_iteration_is_recorded_in_order(recorded: Recorded) -> None:
    iterations = EPOCHS * recorded.per_epoch
    expected_epochs = np.repeat(np.arange(EPOCHS), recorded.per_epoch).tolist()
    for key in ("loss", "acc"):
        df = recorded.view.scalars(key)
        assert df["step"].tolist() == list(range(iterations)), key
        assert df["epoch"].tolist() == expected_epochs, key
        assert recorded.view.capture["keys"][key]["skipped"] == 0


def test_validation_has_one_point_per_epoch_at_its_last_step(recorded: Recorded) -> None:
    df = recorded.view.scalars("val/*")
    for key in ("val/acc", "val/loss"):
        points = df[df["key"] == key]
        assert points["epoch"].tolist() == list(range(EPOCHS)), key
        assert points["step"].tolist() == [
            (epoch + 1) * recorded.per_epoch - 1 for epoch in range(EPOCHS)
        ], key
    accuracy = df[df["key"] == "val/acc"]["value"]
    assert ((accuracy >= 0) & (accuracy <= 1)).all()
    assert accuracy.iloc[-1] > 0.9  # the digits are easy: a working CNN gets there in 2 epochs


def test_lr_is_recorded_exactly_where_the_schedule_changes_it(recorded: Recorded) -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=demo.LR)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=demo.LR_STEP_EPOCHS, gamma=demo.LR_GAMMA
    )
    expected, step = [], 0
    for _ in range(EPOCHS):
        for _ in range(recorded.per_epoch):
            lr = optimizer.param_groups[0]["lr"]
            if not expected or lr != expected[-1][1]:
                expected.append((step, lr))
            step += 1
        optimizer.step()
        scheduler.step()
    df = recorded.view.scalars("lr")
    assert list(zip(df["step"], df["value"], strict=True)) == expected
    assert len(expected) == EPOCHS  # the schedule does change lr during training
    capture = recorded.view.capture["keys"]["lr"]
    assert capture == {
        "policy": "on_change('lr')",
        "recorded": len(expected),
        "skipped": step - len(expected),
    }


def test_grad_norm_is_recorded_every_10_steps(recorded: Recorded) -> None:
    iterations = EPOCHS * recorded.per_epoch
    df = recorded.view.scalars("grad_norm")
    assert df["step"].tolist() == list(range(0, iterations, demo.GRAD_NORM_EVERY))
    assert (df["value"] > 0).all()
    assert recorded.view.capture["keys"]["grad_norm"]["skipped"] == iterations - len(df)


def test_loss_is_finite_and_falls(recorded: Recorded) -> None:
    df = recorded.view.scalars("loss")
    assert np.isfinite(df["value"]).all()
    by_epoch = df.groupby("epoch")["value"].mean()
    assert by_epoch.iloc[-1] < by_epoch.iloc[0]


def test_first_loss_equals_a_recomputation(recorded: Recorded) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(demo.SEED)
        x_train, y_train, _, _ = demo.load_split()
        model = demo.build_model(demo.WIDTH)
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(demo.SEED))
        batch = order[: demo.BATCH_SIZE]
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
    finally:
        torch.set_num_threads(threads)
    assert recorded.view.scalars("loss", steps=0)["value"].tolist() == [loss.item()]


def test_output_tells_where_the_data_lives_and_what_to_run(recorded: Recorded) -> None:
    output = recorded.output
    where = recorded.store.resolve()
    assert str(where) in output
    assert str(where / "stepstore.db") in output
    program, activate = demo.stepstore_command(path=os.defpath)
    assert f"  {program} runs --store {where}\n" in output
    assert f"  {program} show {recorded.run_id} --store {where}\n" in output
    assert f"  {program} export {recorded.run_id} --format csv -o loss.csv --store {where}\n" in (
        output
    )
    assert f"  {program} ui --store {where} --open\n" in output
    if activate is not None:
        assert f"(or activate the environment once, {activate}, and type plain stepstore)" in (
            output
        )
    for shown in ("val/acc", "grad_norm", "on_change('lr')", "max_points=2000"):
        assert shown in output


def test_printed_commands_work_as_printed_without_an_activated_environment(
    recorded: Recorded,
) -> None:
    script = Path(sys.prefix) / "bin" / "stepstore"
    if not script.is_file():
        pytest.skip(f"this Python has no {script} (not a virtual environment with stepstore)")
    line = next(line.strip() for line in recorded.output.splitlines() if " show " in line)
    assert line.split()[0] != "stepstore"  # $PATH does not find .venv/bin/stepstore
    shown = subprocess.run(
        line, shell=True, env={"PATH": os.defpath}, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert recorded.run_id in shown.stdout


def test_stepstore_command_is_the_environments_script_unless_path_finds_it(
    tmp_path: Path,
) -> None:
    env = tmp_path / "my env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "stepstore").write_text("#!/bin/sh\n")
    (env / "bin" / "stepstore").chmod(0o755)
    assert demo.stepstore_command(path="", prefix=str(env), cwd=tmp_path) == (
        "'my env/bin/stepstore'",
        "source 'my env/bin/activate'",
    )
    elsewhere = demo.stepstore_command(path="/usr/bin", prefix=str(env), cwd=tmp_path / "x")
    assert elsewhere == (f"'{env}/bin/stepstore'", f"source '{env}/bin/activate'")
    on_path = f"/usr/bin{os.pathsep}{env / 'bin'}"
    assert demo.stepstore_command(path=on_path, prefix=str(env), cwd=tmp_path) == (
        "stepstore",
        None,
    )
    no_script = demo.stepstore_command(path="", prefix=str(tmp_path / "none"), cwd=tmp_path)
    assert no_script == ("stepstore", None)


def test_progress_lines_and_system_metrics(recorded: Recorded) -> None:
    assert {"system/cpu/percent", "system/process/rss_mb"} <= set(recorded.view.keys())
    steps = recorded.view.scalars("system/process/rss_mb")["step"].tolist()
    assert steps == list(range(len(steps)))
    lines = recorded.printed.splitlines()
    name, per_epoch = recorded.view.name, recorded.per_epoch
    for epoch in range(EPOCHS):
        assert any(
            line.startswith(f"{name} ▸ epoch {epoch}: {per_epoch} steps in ") for line in lines
        )
    assert lines[-1].startswith(f"{name} ▸ done: last step {EPOCHS * per_epoch - 1} after ")
    assert " · val/acc " in lines[-1]


def test_main_leaves_torch_threads_as_they_were(recorded: Recorded) -> None:
    assert torch.get_num_threads() == recorded.threads


def test_bad_epochs_is_rejected_before_anything_is_recorded(tmp_path: Path) -> None:
    with pytest.raises(ss.InvalidArgumentError, match="epochs=0"):
        demo.main(store=tmp_path / "store", epochs=0, console=Console(file=io.StringIO()))
    assert not (tmp_path / "store").exists()


def test_module_imports_without_torch_and_main_says_what_to_install() -> None:
    result = run_python(
        """
        import sys
        sys.modules["torch"] = None
        from stepstore import demo
        try:
            demo.main(store="unused")
        except ModuleNotFoundError as exc:  # what the CLI catches, naming the module
            print(exc.name, exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("torch ")
    assert "pip install 'stepstore[demo]'" in result.stdout


# -- stepstore demo --blowup: the flight recorder ------------------------------------------


def test_blowup_keeps_the_steps_before_the_nan_and_prints_them(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=200)
    threads = torch.get_num_threads()
    run_id = demo.blowup(store=tmp_path / "store", console=console)
    output = console.file.getvalue()

    nan_at = demo.BLOWUP_AT + 1
    first = nan_at - demo.FLIGHT_STEPS + 1
    window = list(range(first, nan_at + demo.FLIGHT_AFTER + 1))
    reason = f"loss is NaN at step {nan_at}"
    with ss.open(tmp_path / "store") as opened:
        view = opened.run(run_id)
        assert [(e.trigger, e.step, e.key, e.reason) for e in view.events()] == [
            ("on_nan('loss')", nan_at, "loss", reason)
        ]
        loss = view.scalars("loss")
        assert loss["step"].tolist() == list(range(nan_at + demo.FLIGHT_AFTER + 1))
        assert np.isfinite(loss["value"][:nan_at]).all() and math.isnan(loss["value"][nan_at])
        held = [k for k in view.keys() if k.startswith(("activations/", "gradients/"))]
        assert len(held) == 7 + 6  # every leaf module's output, every parameter's gradient
        for key in held:
            assert view.tensor(key).steps.tolist() == window, key
        assert np.isfinite(view.tensor("activations/0").at(demo.BLOWUP_AT)).all()
        assert not np.isfinite(view.tensor("activations/6").at(nan_at)).any()
    assert f"The loss turned NaN at step {nan_at}; on_nan('loss') kept the steps" in output
    assert f"event at step {nan_at}: on_nan('loss') on loss: {reason}" in output
    header = next(line for line in output.splitlines() if "┃ key" in line)
    assert [cell.strip() for cell in header.split("┃")[2:-1]] == [str(s) for s in window]
    lines = {line.split("│")[1].strip(): line for line in output.splitlines() if "│" in line}
    assert set(lines) >= {"loss", "lr", *held}
    assert "nan" in lines["loss"] and "1e+20" in lines["lr"]
    logits = [cell.strip() for cell in lines["activations/6"].split("│")[2:-1]]
    assert logits[window.index(nan_at)] == "NaN"  # the logits: 32 x 10, all NaN
    assert torch.get_num_threads() == threads


def test_the_cli_runs_blowup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from stepstore.cli import main

    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0
    assert "--blowup" in result.output and "NaN" in result.output
    calls: list[str | None] = []
    monkeypatch.setattr(demo, "blowup", lambda store=None: calls.append(store) or "abc123")
    result = CliRunner().invoke(main, ["demo", "--blowup", "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert calls == [str(tmp_path)]
    assert "run id: abc123" in result.output


def test_the_cli_blowup_prints_the_kept_window_and_its_event(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from stepstore.cli import main

    store = tmp_path / "store"
    args = ["demo", "--blowup", "--store", str(store)]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    nan_at = demo.BLOWUP_AT + 1
    output = " ".join(result.output.split())
    assert f"event at step {nan_at}: on_nan('loss') on loss: loss is NaN at step {nan_at}" in (
        output
    )
    assert "what the flight recorder kept" in output and "activations/6" in output
    with ss.open(store) as opened:
        (view,) = opened.runs()
        assert f"run id: {view.id}" in output
        assert [e.step for e in view.events()] == [nan_at]
