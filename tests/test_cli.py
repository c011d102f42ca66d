"""The command line: help, runs, show, export, check, demo, errors and exit codes."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import stepstore as ss
from stepstore.cli import main

from .test_export import Sample, bits, expected_csv, expected_points, read_csv, record_sample

STEPSTORE = Path(sys.executable).with_name("stepstore")

COMMAND_OPTIONS = {
    "runs": ["--where", "--project", "--metric", "--sort", "--limit", "--json", "--csv", "--store"],
    "diff": ["RUN", "--keys", "--tolerance", "--abs-tolerance", "--json", "--store"],
    "plot": ["RUN...", "--key", "--tensor", "--x", "--smooth", "--log", "--max-points", "-o"],
    "show": ["RUN", "--json", "--store"],
    "export": ["RUN...", "--format", "--output", "--keys", "--store"],
    "check": ["--json", "--store"],
    "demo": ["--epochs", "--store"],
}


@pytest.fixture
def sample(store_path: Path) -> Sample:
    return record_sample(store_path)


def cli(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """Run the CLI in-process with stdout and stderr kept apart."""
    return CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)


def cli_json(*args: str | Path) -> object:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_every_command_has_help_naming_its_options(command):
    result = cli(command, "--help")
    assert result.exit_code == 0
    for option in COMMAND_OPTIONS[command]:
        assert option in result.stdout
    assert cli(command, "-h").stdout == result.stdout


def test_main_help_lists_commands_and_version():
    result = cli("--help")
    assert result.exit_code == 0
    for text in [*COMMAND_OPTIONS, "--store", "--version"]:
        assert text in result.stdout
    version = cli("--version")
    assert version.exit_code == 0
    assert version.stdout == f"stepstore, version {ss.__version__}\n"


def test_runs_json_round_trips_ids_params_and_summaries(sample):
    runs = cli_json("runs", "--store", sample.store)
    assert [r["name"] for r in runs] == ["alpha", "beta", "gamma"]
    for row in runs:
        view = ss.open(sample.store).run(row["id"])
        assert row["id"] == sample.runs[row["name"]].id
        assert row["params"] == view.params
        assert (row["project"], row["status"], row["tags"]) == (
            view.project,
            view.status,
            view.tags,
        )
        assert (row["created"], row["ended"]) == (view.created, view.ended)
    alpha = runs[0]
    assert alpha["params"]["odd"] == 0.1 + 0.2
    assert alpha["params"]["model"] == {"width": 64, "act": "relu"}
    loss = alpha["summary"]["loss"]
    assert loss["count"] == 11
    assert (loss["last"], loss["min"], loss["max"]) == (-123456789.12345679, "-inf", "inf")
    assert alpha["summary"]["val/loss"]["last"] == 2.75
    assert runs[2]["status"] == "crashed"
    assert runs[2]["summary"]["loss"] == {
        "last": "nan",
        "min": 9.0,
        "max": 9.0,
        "count": 2,
        "first_step": 0,
        "last_step": 1,
    }


def test_store_comes_from_either_position_or_the_environment(sample, tmp_path):
    before = cli_json("--store", sample.store, "runs")
    assert before == cli_json("runs", "--store", sample.store)
    assert before == cli_json("--store", tmp_path / "elsewhere", "runs", "--store", sample.store)
    result = cli("runs", "--json", env={"STEPSTORE_URI": str(sample.store)})
    assert json.loads(result.stdout) == before


def test_runs_where_and_project_filter(sample):
    def names(*args: str) -> list[str]:
        return [r["name"] for r in cli_json("runs", "--store", str(sample.store), *args)]

    assert names("--where", "params.lr < 0.2") == ["alpha", "beta"]
    assert names("--where", "'baseline' in tags and params.model.width = 64") == ["alpha"]
    assert names("--where", "summary.extra.last = 3") == ["beta"]
    assert names("--where", "status = 'crashed'") == ["gamma"]
    assert names("--project", "digits", "--where", "params.lr >= 0.1") == ["beta"]
    assert names("--project", "nope") == []


def test_bad_where_points_at_the_position_and_exits_1(sample):
    result = cli("runs", "--store", sample.store, "--where", "params.lr < and")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: invalid filter at column 13")
    assert "  params.lr < and\n" in result.stderr
    assert result.stderr.rstrip().endswith("^")
    assert "Traceback" not in result.output


def test_runs_table_for_people(sample):
    result = cli("runs", "--store", sample.store)
    assert result.exit_code == 0
    for name, run in sample.runs.items():
        assert run.id in result.stdout
        assert name in result.stdout
    assert "crashed" in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == "3 runs"  # the runs share neither project nor status
    header = "id name project status created loss val/loss acc lr model.width model.act odd ids"
    assert lines[1].split() == header.split()
    beta = next(line for line in lines if line.startswith(sample.runs["beta"].id)).split()
    row = "beta digits finished 0.166667 - - 0.1 - - - -"
    assert beta[1:4] + beta[6:] == row.split()
    empty = cli("runs", "--store", sample.store, "--where", "params.lr > 1")
    assert empty.stdout == "no runs match\n"


def test_show_for_people(sample):
    result = cli("show", "alpha", "--store", sample.store)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"run alpha ({sample.runs['alpha'].id})" in out
    for text in [
        "digits",
        "finished",
        "baseline, cnn",
        "waits=0",
        "model.width",
        "relu",
        "every(2)",
    ]:
        assert text in out
    assert "0.30000000000000004" in out  # params are shown exactly
    rows = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if line.startswith("│")
        for cells in [[c.strip() for c in line.split("│")[1:-1]]]
    }
    assert rows["grad/w"] == ["5", "2", "10", "1.23457e+08", "-inf", "1.23457e+08", "every(2)", "5"]
    assert rows["loss"][:4] == ["11", "0", "10", "-1.23457e+08"]


def test_show_prints_the_runs_events(store_path):
    import numpy as np

    run = ss.init("flights", name="blew-up", store=store_path, flush_interval=0.05)
    run.flight("acts/*", steps=2, trigger=ss.on_nan("loss"))
    for step in range(4):
        loss = float("nan") if step == 2 else 1.0
        run.log({"loss": loss, "acts/a": np.zeros(3, np.float32)}, step=step)
    run.dump_flight("checked by hand")
    run.finish()
    result = cli("show", "blew-up", "--store", store_path, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    rows = [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in out[out.index("events") :].splitlines()
        if line.startswith("│")
    ]
    assert [row[:5] for row in rows] == [
        ["2", "on_nan('loss')", "loss", "loss is NaN at step 2", "0"],
        ["3", "dump_flight", "-", "checked by hand", "0"],
    ]


def test_show_json(sample):
    alpha = cli_json("show", sample.runs["alpha"].id, "--store", sample.store)
    view = ss.open(sample.store).run("alpha")
    assert alpha["capture"]["keys"]["grad/w"] == {"policy": "every(2)", "recorded": 5, "skipped": 5}
    assert alpha["capture"]["bindings"] == [{"pattern": "grad/*", "policy": "every(2)"}]
    assert alpha["writer"]["waits"] == 0
    assert (alpha["host"], alpha["pid"], alpha["git_commit"]) == (
        view.host,
        view.pid,
        view.git_commit,
    )
    assert alpha["env"]["python"] == view.env["python"]
    assert alpha["summary"]["acc"]["first_step"] == 0


def test_show_json_lists_the_runs_events(store_path):
    import numpy as np

    run = ss.init("flights", name="blew-up", store=store_path, flush_interval=0.05)
    run.flight("acts/*", steps=2, trigger=ss.on_nan("loss"))
    for step in range(4):
        run.log({"loss": math.nan if step == 2 else 1.0, "acts/a": np.zeros(3)}, step=step)
    run.dump_flight("checked by hand")
    run.finish()
    shown = cli_json("show", "blew-up", "--store", store_path)
    times = [event.time for event in ss.open(store_path).run("blew-up").events()]
    assert shown["events"] == [
        {
            "step": 2,
            "time": times[0],
            "trigger": "on_nan('loss')",
            "key": "loss",
            "reason": "loss is NaN at step 2",
            "rank": 0,
        },
        {
            "step": 3,
            "time": times[1],
            "trigger": "dump_flight",
            "key": None,
            "reason": "checked by hand",
            "rank": 0,
        },
    ]
    assert times[0] <= times[1] and all(isinstance(t, float) for t in times)


def test_show_unknown_run_names_it_and_exits_1(sample):
    result = cli("show", "nope", "--store", sample.store)
    assert result.exit_code == 1
    assert result.stderr == f"error: no run with id or name 'nope' in {sample.store}\n"


def test_not_a_store_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    for command in (["runs"], ["show", "x"], ["check"], ["export", "x", "-o", "x.csv"]):
        result = cli(*command, "--store", tmp_path)
        assert result.exit_code == 1
        assert result.stderr == (
            f"error: {tmp_path}: not a stepstore store (holds no stepstore.db); "
            "record a run with stepstore.init(store=...) first\n"
        )


def test_export_csv_of_one_and_several_runs(sample, tmp_path):
    one = tmp_path / "alpha.csv"
    result = cli("export", "alpha", "--format", "csv", "-o", one, "--store", sample.store)
    assert result.exit_code == 0, result.output
    expected = expected_csv(sample, ["alpha"])
    assert result.stdout == f"wrote {len(expected) - 1} rows from 1 run(s) to {one} (csv)\n"
    assert read_csv(one, 2) == expected
    both = tmp_path / "both.csv"
    beta = sample.runs["beta"].id
    result = cli(
        "export",
        beta,
        "alpha",
        "-o",
        both,
        "-k",
        "loss",
        "--keys",
        "val/*",
        "--store",
        sample.store,
    )
    assert result.exit_code == 0, result.output
    assert read_csv(both, 4) == expected_csv(sample, ["beta", "alpha"], ["loss", "val/loss"])


def test_export_parquet(sample, tmp_path):
    path = tmp_path / "points.pq"
    result = cli("export", "alpha", "gamma", "-o", path, "--store", sample.store)
    assert result.exit_code == 0, result.output
    assert "(parquet)" in result.stdout
    table = pq.read_table(path)
    rows = [
        (r["run_id"], r["project"], r["run"], r["key"], r["step"], r["epoch"], bits(r["value"]))
        for r in table.to_pylist()
    ]
    assert rows == expected_points(sample, ["alpha", "gamma"])


def test_export_errors(sample, tmp_path):
    store = ["--store", str(sample.store)]
    unknown_format = cli("export", "alpha", "-o", tmp_path / "x.txt", *store)
    assert unknown_format.exit_code == 2
    assert "cannot tell the format from" in unknown_format.stderr
    assert cli("export", "-o", tmp_path / "x.csv", *store).exit_code == 2  # no RUN
    bad_choice = cli("export", "alpha", "--format", "tsv", "-o", tmp_path / "x", *store)
    assert bad_choice.exit_code == 2
    missing = cli("export", "alpha", "nope", "-o", tmp_path / "x.csv", *store)
    assert (missing.exit_code, missing.stderr) == (
        1,
        f"error: no run with id or name 'nope' in {sample.store}\n",
    )
    no_key = cli("export", "alpha", "-o", tmp_path / "x.csv", "-k", "zzz", *store)
    assert no_key.exit_code == 1
    assert no_key.stderr.startswith("error: no scalar key matching 'zzz'")
    to_dir = cli("export", "alpha", "--format", "csv", "-o", tmp_path, *store)
    assert to_dir.exit_code == 1
    assert "is a directory" in to_dir.stderr
    assert not (tmp_path / "x.csv").exists()


def test_check_ok_then_names_a_damaged_chunk(sample):
    ok = cli("check", "--store", sample.store)
    assert (ok.exit_code, ok.stdout) == (0, "ok\n")
    assert cli_json("check", "--store", sample.store) == {"ok": True, "problems": []}
    alpha = sample.runs["alpha"].id
    db = sqlite3.connect(sample.store / "stepstore.db")
    (series_id,) = db.execute(
        "SELECT id FROM series WHERE run_id = ? AND key = 'loss'", (alpha,)
    ).fetchone()
    (data,) = db.execute(
        "SELECT data FROM chunks WHERE series_id = ? AND seq = 0", (series_id,)
    ).fetchone()
    data = bytearray(data)
    data[len(data) // 2] ^= 0x01
    db.execute("UPDATE chunks SET data = ? WHERE series_id = ?", (bytes(data), series_id))
    db.commit()
    db.close()
    damaged = cli("check", "--store", sample.store)
    assert damaged.exit_code == 1
    assert damaged.stdout.splitlines() == [
        f"run {alpha} key 'loss' chunk 0: checksum mismatch",
        f"1 problem(s) in {sample.store}",
    ]
    as_json = cli("check", "--store", sample.store, "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {
        "ok": False,
        "problems": [{"where": f"run {alpha} key 'loss' chunk 0", "what": "checksum mismatch"}],
    }
    export = cli("export", "alpha", "-o", sample.store.parent / "x.csv", "--store", sample.store)
    assert export.exit_code == 1
    assert "checksum mismatch; run `stepstore check`" in export.stderr


def test_keys_with_brackets_are_printed_as_given(new_run, store_path):
    run = new_run(name="[bold]odd")
    run.log({"[red]x[/red]": 1.0})
    run.finish()
    result = cli("show", "[bold]odd", "--store", store_path)
    assert result.exit_code == 0, result.output
    assert "run [bold]odd" in result.stdout
    assert "[red]x[/red]" in result.stdout


@pytest.fixture
def fake_demo(monkeypatch):
    """Install a stand-in ``stepstore.demo`` whose ``main`` runs the given function."""

    def install(body):
        module = types.ModuleType("stepstore.demo")
        module.main = body
        monkeypatch.setitem(sys.modules, "stepstore.demo", module)
        monkeypatch.setattr(ss, "demo", module, raising=False)

    return install


def test_demo_passes_store_and_epochs(fake_demo, tmp_path):
    calls = []
    fake_demo(lambda store=None, epochs=4: calls.append((store, epochs)) or "abc123")
    result = cli("demo", "--epochs", "2", "--store", tmp_path)
    assert (result.exit_code, result.stdout) == (0, "run id: abc123\n")
    assert cli("--store", "elsewhere", "demo").exit_code == 0
    assert cli("demo").exit_code == 0
    assert calls == [(str(tmp_path), 2), ("elsewhere", 4), (None, 4)]
    assert cli("demo", "--epochs", "0").exit_code == 2


@pytest.mark.parametrize("module", ["torch", "sklearn.datasets"])
def test_demo_without_its_extras_says_what_to_install(fake_demo, module):
    def missing(store=None, epochs=4):
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    fake_demo(missing)
    result = cli("demo")
    assert result.exit_code == 2
    assert "pip install 'stepstore[demo]'" in result.stderr
    assert module.partition(".")[0] in result.stderr


def test_demo_does_not_hide_other_import_errors(fake_demo):
    def broken(store=None, epochs=4):
        raise ModuleNotFoundError("No module named 'nothere'", name="nothere")

    fake_demo(broken)
    with pytest.raises(ModuleNotFoundError, match="nothere"):
        cli("demo")


def test_installed_console_script(sample, tmp_path):
    assert STEPSTORE.exists(), f"{STEPSTORE} is missing: pip install -e ."

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [STEPSTORE, *map(str, args)], capture_output=True, text=True, timeout=60
        )

    listed = run("runs", "--store", sample.store, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [r.id for r in sample.runs.values()]
    table = run("runs", "--store", sample.store)
    assert table.returncode == 0
    assert sample.runs["alpha"].id in table.stdout
    assert "\x1b[" not in table.stdout  # no colour codes when piped
    missing = run("show", "nope", "--store", sample.store)
    assert missing.returncode == 1
    assert missing.stderr == f"error: no run with id or name 'nope' in {sample.store}\n"
    out = tmp_path / "a.csv"
    exported = run("export", "alpha", "-o", out, "--store", sample.store)
    assert exported.returncode == 0, exported.stderr
    assert read_csv(out, 2) == expected_csv(sample, ["alpha"])
    usage = run("runs", "--bogus")
    assert usage.returncode == 2
    assert "--bogus" in usage.stderr


def test_installed_console_script_runs_the_real_demo(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    store = tmp_path / "demo"
    demo = subprocess.run(
        [STEPSTORE, "demo", "--epochs", "1", "--store", store],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    run_id = demo.stdout.splitlines()[-1].removeprefix("run id: ")
    assert ss.open(store).run(run_id).status == "finished"


def test_migrate_creates_and_reports_the_schema_version(tmp_path):
    from click.testing import CliRunner

    from stepstore.backends.sqlite import SCHEMA_VERSION
    from stepstore.cli import main

    result = CliRunner().invoke(main, ["migrate", "--store", str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{tmp_path / 'new'}: schema version {SCHEMA_VERSION}"
    assert (tmp_path / "new" / "stepstore.db").exists()
