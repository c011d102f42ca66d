"""Distributed jobs: one shared run, recorded by rank 0, idle elsewhere, resumed on restart."""

from __future__ import annotations

import socket

import pytest

import stepstore as ss

from .conftest import FAST, run_python


def test_ranks_share_one_run_via_environment(monkeypatch, store_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("STEPSTORE_RUN_ID", "job-42")
    monkeypatch.setenv("RANK", "1")
    idle = ss.init("dist", store=store_path, **FAST)
    assert isinstance(idle, ss.Run) and idle.id == "job-42"
    idle.log({"loss": 1.0})
    idle.log_record("r", {"a": 1})
    idle.finish()
    assert not store_path.exists()  # a non-zero rank writes nothing
    monkeypatch.setenv("RANK", "0")
    with ss.init("dist", store=store_path, **FAST) as run:
        assert run.id == "job-42"
        run.log({"loss": 1.0})
    with ss.init("dist", store=store_path, **FAST) as again:  # the job restarts: same run
        assert again.id == "job-42" and again.step == 1
        again.log({"loss": 0.5})
    runs = ss.open(store_path).runs()
    assert [r.id for r in runs] == ["job-42"]
    assert runs[0].scalars("loss")["step"].tolist() == [0, 1]


def test_ranks_without_a_way_to_agree_are_told_how(monkeypatch, store_path):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.delenv("STEPSTORE_RUN_ID", raising=False)
    with pytest.raises(ss.InvalidArgumentError, match=r"rank 2 of 4: .* set \$STEPSTORE_RUN_ID"):
        ss.init("dist", store=store_path)
    monkeypatch.setenv("STEPSTORE_RUN_ID", "../etc")
    with pytest.raises(ss.InvalidArgumentError, match=r"STEPSTORE_RUN_ID='../etc': expected"):
        ss.init("dist", store=store_path)


@pytest.mark.parametrize("ranks", ["zero", "all"])
def test_torch_distributed_broadcasts_rank_zeros_id(tmp_path, ranks):
    pytest.importorskip("torch")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = """
        import sys, torch.distributed as dist, stepstore as ss
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{sys.argv[2]}",
                                rank=rank, world_size=2)
        run = ss.init("dist", store=sys.argv[3], flush_interval=0.05, ranks=sys.argv[4])
        run.log({"loss": float(rank)})
        run.finish()
        print(run.id, type(run).__name__)
        dist.destroy_process_group()
        """
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    env.pop("STEPSTORE_RUN_ID", None)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(code),
                str(rank),
                str(port),
                str(tmp_path / "s"),
                ranks,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0][0] == outputs[1][0]
    assert [o[1] for o in outputs] == ["Run", "IdleRun" if ranks == "zero" else "Run"]
    view = ss.open(tmp_path / "s").run(outputs[0][0])
    assert view.scalars("loss")["value"].tolist() == [0.0]
    recorded = view.scalars("loss", ranks="all")[["rank", "value"]].values.tolist()
    assert recorded == ([[0, 0.0]] if ranks == "zero" else [[0, 0.0], [1, 1.0]])


def test_single_process_ignores_rank_variables(monkeypatch, store_path):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    run = ss.init("solo", store=store_path, **FAST)
    assert len(run.id) == 16
    run.finish()
    assert run_python("import stepstore").returncode == 0


def test_idle_run_offers_every_public_member_of_run(tmp_path):
    import inspect

    from stepstore.recording.idle import IdleRun

    idle = IdleRun("job-1", "dist", None, 1)
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"x")
    arguments = {
        "log": ({"loss": 1.0},),
        "log_record": ("r", {"a": 1}),
        "log_artifact": (artifact,),
        "policy": ("*", ss.every(2)),
        "reduce": ("*", "stats"),
        "budget": (1024,),
        "update_params": ({"lr": 0.1},),
        "history": ("loss",),
        "latest": ("loss",),
        "flight": ("activations/*", 4),
        "dump_flight": ("why",),
    }
    public = sorted(name for name in dir(ss.Run) if not name.startswith("_"))
    assert {"log", "finish", "capture_info", "writer_info", "update_params"} <= set(public)
    for name in [*public, "__enter__", "__repr__"]:
        assert hasattr(IdleRun, name), f"IdleRun lacks Run.{name}"
        ours, theirs = inspect.getattr_static(ss.Run, name), inspect.getattr_static(IdleRun, name)
        assert isinstance(ours, property) == isinstance(theirs, property), name
        if isinstance(ours, property):
            getattr(idle, name)
            continue
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(theirs).parameters
        ), name
        getattr(idle, name)(*arguments.get(name, ()))
    with idle as entered:
        assert entered is idle
    assert isinstance(idle, ss.Run) and idle.capture_info()["keys"] == {}
    assert idle.writer_info()["points"] == 0 and idle.log_artifact(artifact) == "model.bin"
