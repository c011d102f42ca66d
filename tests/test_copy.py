"""``stepstore copy``: every kind of data moves between stores, exactly and idempotently."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

import stepstore as ss
from stepstore.backends import open_backend
from stepstore.cli import main
from stepstore.io import copy_runs

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
