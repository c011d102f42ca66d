"""Run lifecycle, steps and epochs, metadata, and clear errors that lose nothing."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

import stepstore as ss

from .conftest import run_python


def test_steps_auto_increment_and_epoch_is_sticky(new_run, store_path):
    run = new_run()
    run.log({"loss": 1.0}, epoch=0)
    run.log({"loss": 0.9})
    run.log({"val/acc": 0.5}, epoch=0)
    run.log({"loss": 0.8}, step=10, epoch=1)
    run.log({"loss": 0.7})
    run.finish()
    view = ss.open(store_path).run(run.id)
    loss = view.scalars("loss")
    assert loss["step"].tolist() == [0, 1, 10, 11]
    assert loss["epoch"].tolist() == [0, 0, 1, 1]
    assert view.scalars("val/acc")["step"].tolist() == [2]


def test_points_without_epoch_have_missing_epoch(new_run, store_path):
    run = new_run()
    run.log({"x": 1.0})
    run.finish()
    df = ss.open(store_path).run(run.id).scalars("x")
    assert df["epoch"].isna().tolist() == [True]
    assert str(df["epoch"].dtype) == "Int64"


def test_metadata_is_recorded(new_run, store_path):
    run = new_run(
        name="cnn-lr1e-3",
        params={"lr": 1e-3, "model": {"width": 64}, "np": np.float32(0.5), "layers": (1, 2)},
        tags=["baseline", "baseline", "cnn"],
    )
    run.log({"loss": 1.0})
    run.finish()
    view = ss.open(store_path).run("cnn-lr1e-3")
    assert view.id == run.id and view.name == "cnn-lr1e-3" and view.project == "test"
    assert view.params == {"lr": 1e-3, "model": {"width": 64}, "np": 0.5, "layers": [1, 2]}
    assert view.tags == ["baseline", "cnn"]
    assert view.status == "finished"
    assert view.ended >= view.created > 0
    assert view.pid > 0 and view.host
    assert view.env["python"].count(".") == 2
    assert "numpy" in view.env["packages"]
    assert view.writer["waits"] == 0 and view.writer["points"] == 1


def test_generated_names_are_readable():
    run_id = "0123456789abcdef"
    from stepstore.recording.names import new_name

    name = new_name(run_id)
    assert name.endswith("-cdef") and name.count("-") == 2


def test_context_manager_records_crashed_on_exception(store_path):
    with pytest.raises(ZeroDivisionError), ss.init("t", store=store_path) as run:
        run.log({"loss": 1.0})
        1 / 0  # noqa: B018
    view = ss.open(store_path).run(run.id)
    assert view.status == "crashed"
    assert view.summary["loss"]["count"] == 1


def test_exit_without_finish_records_incomplete(store_path):
    result = run_python(
        """
        import sys, stepstore as ss
        run = ss.init("t", store=sys.argv[1])
        run.log({"loss": 2.0})
        print(run.id)
        """,
        str(store_path),
    )
    assert result.returncode == 0, result.stderr
    view = ss.open(store_path).run(result.stdout.strip())
    assert view.status == "incomplete"
    assert view.scalars("loss")["value"].tolist() == [2.0]


def test_finish_twice_is_harmless_and_log_after_finish_raises(new_run):
    run = new_run()
    run.finish()
    run.finish()
    with pytest.raises(ss.RunStateError, match=r"is finished; it cannot record any more"):
        run.log({"x": 1.0})
    with pytest.raises(ss.RunStateError):
        run.policy("x", ss.every(2))


def test_resume_continues_steps(store_path):
    first = ss.init("t", store=store_path, flush_interval=0.05)
    for _ in range(5):
        first.log({"loss": 1.0, "acc": 0.1})
    first.finish()
    again = ss.init("t", store=store_path, resume=first.id, flush_interval=0.05)
    assert again.id == first.id and again.step == 5
    again.log({"loss": 0.5})
    with pytest.raises(ss.StepOrderError, match=r"key 'acc': step 2 is below its last"):
        again.log({"acc": 0.0}, step=2)
    again.finish()
    view = ss.open(store_path).run(first.id)
    assert view.scalars("loss")["step"].tolist() == [0, 1, 2, 3, 4, 5]
    assert view.status == "finished"


def test_resume_appends_to_open_chunk_across_many_resumes(store_path):
    run_id = None
    for round_ in range(4):
        run = ss.init("t", store=store_path, resume=run_id, chunk_size=16, flush_interval=0.05)
        run_id = run.id
        for _ in range(10):
            run.log({"x": float(round_)})
        run.finish()
    df = ss.open(store_path).run(run_id).scalars("x")
    assert df["step"].tolist() == list(range(40))
    assert df["value"].tolist() == [float(i // 10) for i in range(40)]
    assert ss.open(store_path).check() == []


def test_resume_checks_project_and_run(store_path):
    run = ss.init("a", store=store_path)
    run.finish()
    with pytest.raises(ss.InvalidArgumentError, match="belongs to project 'a', not 'b'"):
        ss.init("b", store=store_path, resume=run.id)
    with pytest.raises(ss.NotFoundError, match="no run with id or name 'nope'"):
        ss.init("a", store=store_path, resume="nope")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"loss": "nan"}, r"key 'loss': cannot record 'nan' of type str"),
        ({"loss": None}, r"key 'loss': cannot record None of type NoneType"),
        ({"loss": 1 + 2j}, r"key 'loss': cannot record \(1\+2j\) of type complex"),
        ({"loss": [1.0, 2.0]}, r"key 'loss': cannot record \[1.0, 2.0\] of type list"),
        ({"loss": 2**60}, r"integer 1152921504606846976 is not exactly representable"),
        ({"": 1.0}, r"key '': expected a non-empty name"),
        ({"a\nb": 1.0}, r"key 'a\\nb': contains control character '\\n'"),
        ({" x": 1.0}, r"without leading or trailing whitespace"),
        ({3: 1.0}, r"key 3: expected a string, got int"),
    ],
)
def test_bad_values_raise_and_lose_nothing(new_run, store_path, values, message):
    run = new_run()
    run.log({"loss": 1.0, "ok": 2.0})
    with pytest.raises(ss.InvalidValueError, match=message):
        run.log({"ok": 3.0, **values})
    run.log({"loss": 0.5, "ok": 4.0})
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.scalars("ok")["value"].tolist() == [2.0, 4.0]
    assert view.scalars("loss")["value"].tolist() == [1.0, 0.5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": -1}, r"step=-1: expected an integer in \[0, 9223372036854775807\]"),
        ({"step": 1.5}, r"step=1.5: expected a non-negative integer, got float"),
        ({"step": True}, r"step=True: expected a non-negative integer, got bool"),
        ({"epoch": -2}, r"epoch=-2: expected an integer in"),
        ({"epoch": "1"}, r"epoch='1': expected a non-negative integer, got str"),
        ({"when": "every(3)"}, r"when='every\(3\)': expected a capture policy"),
    ],
)
def test_bad_arguments_name_the_argument(new_run, kwargs, message):
    run = new_run()
    with pytest.raises(ss.InvalidArgumentError, match=message):
        run.log({"x": 1.0}, **kwargs)


def test_step_going_backwards_raises_unless_allowed(new_run, store_path):
    run = new_run()
    run.log({"x": 1.0}, step=5)
    run.log({"y": 1.0}, step=1)  # another key keeps its own last step
    with pytest.raises(ss.StepOrderError, match=r"key 'x': step 5 is at its last recorded step 5"):
        run.log({"x": 2.0}, step=5)  # one value per key and step
    with pytest.raises(
        ss.StepOrderError,
        match=r"key 'x': step 4 is below its last recorded "
        r"step 5.*allow_rewind=True",
    ):
        run.log({"x": 3.0}, step=4)
    rewind = new_run(allow_rewind=True)
    rewind.log({"x": 1.0}, step=5)
    rewind.log({"x": 2.0}, step=4)
    rewind.finish()
    assert ss.open(store_path).run(rewind.id).scalars("x")["step"].tolist() == [5, 4]


def test_a_key_keeps_its_kind(new_run, store_path):
    run = new_run()
    run.log({"w": np.ones((2, 2)), "loss": 1.0})
    with pytest.raises(ss.KindMismatchError, match=r"key 'w' holds tensors; got float 1.0"):
        run.log({"w": 1.0})
    with pytest.raises(
        ss.KindMismatchError,
        match=r"key 'loss' holds scalars; got an array "
        r"of shape \(3,\)",
    ):
        run.log({"loss": np.zeros(3)})
    with pytest.raises(
        ss.KindMismatchError,
        match=r"key 'loss' holds scalar values; got a "
        r"record",
    ):
        run.log_record("loss", {"a": 1})
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.keys() == ["loss", "w"]
    assert view.keys("tensor") == ["w"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"project": ""}, r"project='': expected a non-empty string"),
        ({"project": "p", "tags": "abc"}, r"tags='abc': expected a list of non-empty strings"),
        ({"project": "p", "params": [1]}, r"params=\[1\]: expected a dict or None"),
        ({"project": "p", "params": {"f": object}}, r"params: .*not JSON-serialisable"),
        ({"project": "p", "flush_interval": 0}, r"flush_interval=0: expected a positive"),
        ({"project": "p", "on_error": "ignore"}, r"on_error='ignore': expected 'raise' or"),
        ({"project": "p", "bogus": 1}, r"unknown setting\(s\) \['bogus'\]"),
    ],
)
def test_bad_init_arguments(store_path, kwargs, message):
    with pytest.raises(ss.InvalidArgumentError, match=message):
        ss.init(store=store_path, **kwargs)


def test_env_settings_are_validated(monkeypatch, store_path):
    monkeypatch.setenv("STEPSTORE_FLUSH_INTERVAL", "soon")
    with pytest.raises(ss.InvalidArgumentError, match=r"\$STEPSTORE_FLUSH_INTERVAL='soon'"):
        ss.init("p", store=store_path)


def test_store_uri_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPSTORE_URI", str(tmp_path / "envstore"))
    run = ss.init("p", flush_interval=0.05)
    run.log({"x": 1.0})
    run.finish()
    assert ss.open().run(run.id).summary["x"]["last"] == 1.0


def test_writer_error_surfaces_then_recovers_without_loss(store_path):
    run = ss.init("p", store=store_path, flush_interval=0.02)
    run.log({"x": 1.0})
    run.flush()
    db = sqlite3.connect(store_path / "stepstore.db")
    db.execute("ALTER TABLE chunks RENAME TO chunks_away")
    db.commit()
    run.log({"x": 2.0})
    with pytest.raises(ss.WriterError, match="no such table: chunks"):
        for _ in range(500):
            run.log({"x": 3.0})
            __import__("time").sleep(0.01)
    db.execute("ALTER TABLE chunks_away RENAME TO chunks")
    db.commit()
    db.close()
    run.finish()
    values = ss.open(store_path).run(run.id).scalars("x")["value"].tolist()
    assert values[:2] == [1.0, 2.0] and set(values[2:]) == {3.0}


def test_writer_error_can_warn_instead(store_path):
    run = ss.init("p", store=store_path, flush_interval=0.02, on_error="warn")
    run.log({"x": 1.0})
    run.flush()
    db = sqlite3.connect(store_path / "stepstore.db")
    db.execute("ALTER TABLE chunks RENAME TO chunks_away")
    db.commit()
    with pytest.warns(RuntimeWarning, match="no such table: chunks"):
        for _ in range(500):
            run.log({"x": 2.0})
            __import__("time").sleep(0.01)
    db.execute("ALTER TABLE chunks_away RENAME TO chunks")
    db.commit()
    db.close()
    run.finish()
    values = ss.open(store_path).run(run.id).scalars("x")["value"].tolist()
    assert values[0] == 1.0 and all(v == 2.0 for v in values[1:]) and len(values) > 1


def test_summary_ignores_nan_for_min_max_but_keeps_last(new_run, store_path):
    run = new_run()
    for value in [3.0, math.nan, -1.0, math.inf, math.nan]:
        run.log({"x": value})
    run.finish()
    summary = ss.open(store_path).run(run.id).summary["x"]
    assert summary["count"] == 5 and summary["min"] == -1.0 and summary["max"] == math.inf
    assert math.isnan(summary["last"])


def test_forked_child_cannot_log_into_parents_run(new_run):
    import os

    run = new_run()
    pid = os.fork()
    if pid == 0:
        try:
            run.log({"x": 1.0})
        except ss.RunStateError as exc:
            os._exit(0 if "forked child cannot record" in str(exc) else 3)
        os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_log_without_advance_records_at_the_last_step_and_keeps_it(new_run, store_path):
    run = new_run()
    run.log({"val/acc": 0.1}, advance=False)  # before any step: at step 0
    assert run.step == 0
    for epoch in range(2):
        for _ in range(3):
            run.log({"loss": 1.0}, epoch=epoch)
        run.log({"val/acc": 0.5, "val/loss": 2.0}, epoch=epoch, advance=False)
        assert run.step == 3 * (epoch + 1)
    run.log({"grad": 1.0}, step=9, advance=False)  # an explicit step: the run's step stays
    run.log({"lr": 0.1}, advance=False)
    with pytest.raises(ss.StepOrderError, match=r"key 'val/acc': step 5 is at its last"):
        run.log({"val/acc": 0.6}, advance=False)
    run.log({"loss": 1.0})
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.scalars("loss")["step"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    val = view.scalars("val/acc")
    assert val["step"].tolist() == [0, 2, 5]
    assert val["epoch"].fillna(-1).tolist() == [-1, 0, 1]
    assert view.scalars("val/loss")[["step", "epoch"]].values.tolist() == [[2, 0], [5, 1]]
    assert view.scalars("lr")["step"].tolist() == [5]


def test_resume_restores_the_last_epoch(store_path):
    first = ss.init("t", store=store_path, flush_interval=0.05)
    for epoch in range(3):
        first.log({"loss": 1.0}, epoch=epoch)
    first.log({"val/acc": 0.5}, advance=False)
    first.finish()
    again = ss.init("t", store=store_path, resume=first.id, flush_interval=0.05)
    assert again.step == 3
    again.log({"loss": 0.5})
    again.log({"loss": 0.4}, epoch=3)
    again.finish()
    df = ss.open(store_path).run(first.id).scalars("loss")
    assert df[["step", "epoch"]].values.tolist() == [[0, 0], [1, 1], [2, 2], [3, 2], [4, 3]]


def test_resume_without_epochs_keeps_points_without_epoch(store_path):
    first = ss.init("t", store=store_path, flush_interval=0.05)
    first.log({"loss": 1.0})
    first.finish()
    again = ss.init("t", store=store_path, resume=first.id, flush_interval=0.05)
    again.log({"loss": 0.5})
    again.finish()
    df = ss.open(store_path).run(first.id).scalars("loss")
    assert df["step"].tolist() == [0, 1]
    assert df["epoch"].isna().tolist() == [True, True]


def test_resume_takes_the_step_from_training_keys_not_system_samples(store_path):
    first = ss.init("t", store=store_path, flush_interval=0.05)
    first.log({"loss": 1.0}, epoch=4)
    first.log({"system/cpu/percent": 3.0}, step=50)  # system keys count their own samples
    first.finish()
    again = ss.init("t", store=store_path, resume=first.id, flush_interval=0.05)
    assert again.step == 1
    again.log({"loss": 0.5})
    again.finish()
    df = ss.open(store_path).run(first.id).scalars("loss")
    assert df[["step", "epoch"]].values.tolist() == [[0, 4], [1, 4]]


def test_on_change_of_a_key_never_logged_warns_at_finish(new_run, store_path):
    run = new_run()
    run.policy("lr", ss.on_change("learning_rate"))
    run.policy("acc", ss.on_change("acc"))  # logged: no warning
    run.log({"lr": 0.1, "acc": 0.5})
    run.log({"loss": 0.5}, when=ss.first(1) | ss.on_change("missing"))
    with pytest.warns(RuntimeWarning) as caught:
        run.finish()
    who = f"stepstore: run {run.name} ({run.id}): policy"
    assert [str(w.message) for w in caught] == [
        f"{who} on_change('learning_rate') bound to 'lr' reads key 'learning_rate', which "
        "was never logged in this run, so on_change('learning_rate') recorded nothing; log "
        "'learning_rate' or name a key that is logged",
        f"{who} (first(1) | on_change('missing')) given as when= reads key 'missing', which "
        "was never logged in this run, so on_change('missing') recorded nothing; log "
        "'missing' or name a key that is logged",
    ]
    assert caught[0].filename == __file__
    view = ss.open(store_path).run(run.id)
    assert view.status == "finished" and view.keys() == ["acc", "loss"]


def test_a_store_without_a_journal_records_without_any_file(tmp_path, monkeypatch):
    from stepstore.recording.journal import Journal

    def no_file(*args, **kwargs):
        raise AssertionError("a memory store must not create a journal file")

    monkeypatch.setattr(Journal, "create", no_file)
    monkeypatch.chdir(tmp_path)
    run = ss.init("mem", store="memory://journal-less", params={"lr": 0.1}, flush_interval=0.05)
    for step in range(5000):  # more than one flush, and device-free derived scalars too
        run.log({"loss": step / 4, "acc": 1.0})
    run.log({"w": np.arange(4.0)})
    run.reduce("t", "stats").log({"t": np.array([1.0, 3.0])})
    run.log_record("note", {"a": [1, 2]})
    run.flush()
    run.finish()
    view = ss.open("memory://journal-less").run(run.id)
    assert view.status == "finished" and view.params == {"lr": 0.1}
    assert view.scalars("loss")["value"].tolist() == [s / 4 for s in range(5000)]
    assert view.scalars("t/mean")["value"].tolist() == [2.0]
    assert view.records("note")["a"].tolist() == [[1, 2]]
    assert list(tmp_path.iterdir()) == []


def test_update_params_merges_late_params_and_filters_see_them(new_run, store_path):
    run = new_run(params={"lr": 0.1, "model": {"width": 64, "depth": 2}})
    run.update_params({"model": {"depth": 4}}, batch=np.int64(32))
    run.update_params(lr=0.05)
    want = {"lr": 0.05, "model": {"width": 64, "depth": 4}, "batch": 32}
    assert run.params == want
    with pytest.raises(ss.InvalidArgumentError, match=r"params: not JSON-serialisable: "):
        run.update_params(bad=object())
    assert run.params == want
    run.finish()
    store = ss.open(store_path)
    assert store.run(run.id).params == want
    assert [v.id for v in store.runs(where="params.model.depth = 4 and params.lr < 0.06")] == [
        run.id
    ]


def test_history_and_latest_read_flushed_and_pending_points_exactly(store_path):
    run = ss.init("live", store=store_path, flush_interval=3600, chunk_size=100)
    for step in range(250):
        run.log({"loss": step / 8, "acc": -step}, epoch=step // 100)
    run.flush()  # 250 points stored (two sealed chunks and an open one)
    for step in range(250, 260):
        run.log({"loss": step / 8}, epoch=3)  # pending: the writer waits an hour
        assert run.latest("loss") == step / 8
    assert run.writer_info()["points"] == 500
    assert run.history("loss").tolist() == [s / 8 for s in range(260)]
    assert run.history("loss", last=15).tolist() == [s / 8 for s in range(245, 260)]
    assert run.history("loss", last=3).tolist() == [257 / 8, 258 / 8, 259 / 8]
    points = run.history("acc", last=120, with_steps=True)
    assert points.step.tolist() == list(range(130, 250))
    assert points.value.tolist() == [-s for s in range(130, 250)]
    assert points.epoch.tolist() == [s // 100 for s in range(130, 250)]
    assert run.latest("acc") == -249.0
    run.log({"once": 1.0}, step=300)
    plain = run.history("once", with_steps=True)
    assert (plain.step.tolist(), plain.epoch.tolist()) == ([300], [3])
    run.log({"w": np.zeros(3)})
    with pytest.raises(ss.KindMismatchError, match=r"key 'w' holds tensor values"):
        run.latest("w")
    with pytest.raises(ss.NotFoundError, match=r"key 'nope': not logged in run"):
        run.history("nope")
    with pytest.raises(ss.InvalidArgumentError, match=r"last=0: expected a positive"):
        run.history("loss", last=0)
    run.finish()


def test_history_includes_derived_scalars_and_survives_a_resume(store_path):
    run = ss.init("live", store=store_path, flush_interval=0.05)
    run.reduce("t", "stats")
    for step in range(3):
        run.log({"t": np.array([float(step), step + 2.0]), "loss": 1.0 + step})
    run.flush()
    assert run.history("t/mean").tolist() == [1.0, 2.0, 3.0]
    assert run.latest("t/max") == 4.0
    run.finish()
    again = ss.init("live", store=store_path, resume=run.id, flush_interval=0.05)
    assert again.latest("loss") == 3.0
    again.log({"loss": 9.0})
    assert again.history("loss", last=2).tolist() == [3.0, 9.0]
    again.finish()
