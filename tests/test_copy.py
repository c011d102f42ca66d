"""``stepstore copy``: every kind of data moves between stores, exactly and idempotently."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from click.testing import CliRunner

import stepstore as ss
from stepstore.backends import open_backend
from stepstore.cli import main
from stepstore.io import CopyResult, copy_runs
from stepstore.io.copy import copy

from .conftest import FAST


def record_source(path, tmp_path):
    run = ss.init("copy", store=path, params={"lr": 0.1}, tags=["laptop"], chunk_size=16, **FAST)
    for step in range(50):
        run.log(
            {"loss": 1.0 / (step + 1), "w": np.full((3, 2), step, np.float32)}, epoch=step // 10
        )
    run.log({"img": ss.Image(np.eye(4))})
    run.log_record("notes", {"text": "hello"}, step=3)
    artifact = tmp_path / "ckpt.bin"
    artifact.write_bytes(b"checkpoint")
    run.log_artifact(artifact)
    run.finish()
    return run.id


def test_copy_moves_everything_into_each_backend(store_uri, tmp_path):
    source_path = tmp_path / "laptop"
    run_id = record_source(source_path, tmp_path)
    source = ss.open(source_path)
    target = ss.Store(open_backend(store_uri, create=True))
    results = copy_runs(source, target)
    assert [(r.run_id, r.action) for r in results] == [(run_id, "copied")]
    copied = ss.open(store_uri).run(run_id)
    original = source.run(run_id)
    assert copied.params == {"lr": 0.1} and copied.tags == ["laptop"]
    assert copied.status == "finished"
    assert copied.scalars("loss").equals(original.scalars("loss"))
    assert np.array_equal(copied.tensor("w")[:], original.tensor("w")[:])
    assert np.array_equal(copied.images("img")[0].array, original.images("img")[0].array)
    assert copied.records("notes").equals(original.records("notes"))
    assert copied.artifact("ckpt.bin") == b"checkpoint"
    assert ss.open(store_uri).runs(where="params.lr = 0.1 and 'laptop' in tags")[0].id == run_id
    again = copy_runs(source, target)
    assert [(r.run_id, r.action) for r in again] == [(run_id, "skipped")]
    assert len(ss.open(store_uri).run(run_id).records("notes")) == 1


def test_copy_command_with_filter(tmp_path):
    source_path = tmp_path / "a"
    run_id = record_source(source_path, tmp_path)
    other = ss.init("elsewhere", store=source_path, **FAST)
    other.finish()
    runner = CliRunner()
    result = runner.invoke(
        main, ["copy", "--from", str(source_path), "--to", str(tmp_path / "b"), "--project", "copy"]
    )
    assert result.exit_code == 0, result.output
    assert f"copied {run_id}" in result.output and "1 copied, 0 already up to date" in result.output
    assert [v.id for v in ss.open(tmp_path / "b").runs()] == [run_id]
    same = runner.invoke(main, ["copy", "--from", str(source_path), "--to", str(source_path)])
    assert same.exit_code == 1 and "source and target are the same store" in same.output


def record_memory_run(uri, artifact, name, lr):
    """A finished run in the memory store ``uri`` with every kind of value."""
    run = ss.init("mem", name=name, store=uri, params={"lr": lr}, tags=["ram"], **FAST)
    for step in range(40):
        w = np.full((2, 2), step * lr, np.float32)
        run.log({"loss": lr / (step + 1), "w": w}, epoch=step // 20)
    run.log({"img": ss.Image(np.arange(12, dtype=np.uint8).reshape(3, 4))}, step=40)
    run.log_record("notes", {"text": name}, step=5)
    artifact.write_bytes(name.encode())
    run.log_artifact(artifact)
    run.finish("failed" if lr > 0.5 else "finished")
    return run.id


def test_copy_persists_a_memory_store_into_each_backend(store_uri, tmp_path):
    """memory:// -> embedded, PostgreSQL and MariaDB: exact values, the filter, and a
    second copy that skips what is up to date."""
    source = f"memory://copy-{uuid.uuid4().hex[:12]}"
    artifact = tmp_path / "model.bin"
    kept = record_memory_run(source, artifact, "kept", 0.1)
    left = record_memory_run(source, artifact, "left", 1.0)
    results = copy(source, store_uri, where="params.lr < 0.5")
    assert results == [CopyResult(kept, "kept", "copied", 40 + 40 + 1 + 1)]
    with ss.open(store_uri) as target:
        assert [v.id for v in target.runs()] == [kept]
        view = target.run(kept)
        assert (view.name, view.project, view.status) == ("kept", "mem", "finished")
        assert view.params == {"lr": 0.1} and view.tags == ["ram"]
        loss = view.scalars("loss")
        assert loss["step"].tolist() == list(range(40))
        assert loss["epoch"].tolist() == [0] * 20 + [1] * 20
        assert loss["value"].tolist() == [0.1 / (s + 1) for s in range(40)]
        expected = np.stack([np.full((2, 2), s * 0.1, np.float32) for s in range(40)])
        assert np.array_equal(view.tensor("w")[:], expected)
        (image,) = view.images("img")
        assert image.step == 40
        assert np.array_equal(image.array, np.arange(12, dtype=np.uint8).reshape(3, 4))
        assert view.records("notes")["text"].tolist() == ["kept"]
        assert view.artifact("model.bin") == b"kept"
        assert target.check() == []
    again = copy(ss.open(source), store_uri)
    assert [(r.run_id, r.action) for r in again] == [(kept, "skipped"), (left, "copied")]
    with ss.open(store_uri) as target:
        view = target.run(left)
        assert view.status == "failed" and view.artifact("model.bin") == b"left"
        assert view.scalars("loss")["value"].tolist() == [1.0 / (s + 1) for s in range(40)]


def test_copy_into_a_memory_store_and_out_of_a_running_one(tmp_path):
    """A memory store is a target too; a run still recording is copied again once it
    logged more; given stores stay open."""
    embedded = tmp_path / "disk"
    run_id = record_source(embedded, tmp_path)
    target = f"memory://into-{uuid.uuid4().hex[:12]}"
    assert [r.action for r in copy(embedded, target)] == ["copied"]
    view = ss.open(target).run(run_id)
    assert view.scalars("loss")["value"].tolist() == [1.0 / (s + 1) for s in range(50)]
    assert view.artifact("ckpt.bin") == b"checkpoint"

    live = ss.init("live", store=target, **FAST)
    live.log({"x": 1.0}, step=0)
    live.flush()
    store = ss.open(target)
    out = tmp_path / "out"
    assert [(r.run_id, r.action) for r in copy(store, out, where="project = 'live'")] == [
        (live.id, "copied")
    ]
    live.log({"x": 2.0}, step=1)
    live.finish()
    assert [r.action for r in copy(store, out, where="project = 'live'")] == ["copied"]
    assert store.run(live.id).status == "finished"  # still open
    copied = ss.open(out).run(live.id)
    assert copied.status == "finished" and copied.scalars("x")["value"].tolist() == [1.0, 2.0]


def test_copy_refuses_one_store_into_itself():
    uri = f"memory://self-{uuid.uuid4().hex[:12]}"
    with ss.init("p", store=uri, **FAST):
        pass
    with pytest.raises(ss.InvalidArgumentError, match="source and target are the same store"):
        copy(uri, uri)


def test_copy_command_reads_a_memory_store_of_its_process(tmp_path):
    """In one process (here CliRunner's) the command copies a memory store like any other."""
    uri = f"memory://cli-{uuid.uuid4().hex[:12]}"
    run_id = record_memory_run(uri, tmp_path / "a.bin", "cli", 0.1)
    result = CliRunner().invoke(main, ["copy", "--from", uri, "--to", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert result.output == f"copied {run_id} (cli): 82 points\n1 copied, 0 already up to date\n"


def test_copy_command_refuses_a_memory_target(tmp_path):
    """The command's process ends at once: a copy into memory would vanish with it."""
    source = tmp_path / "a"
    record_source(source, tmp_path)
    result = CliRunner().invoke(main, ["copy", "--from", str(source), "--to", "memory://kept"])
    assert result.exit_code == 2
    assert "--to memory://kept: a memory store lives in one process" in result.output
