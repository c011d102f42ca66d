"""``memory://NAME`` stores: the whole API in one process, nothing on disk, and clear
errors in any other process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

import stepstore as ss
from stepstore.backends import open_backend

from .conftest import FAST, run_python

STEPSTORE = Path(sys.executable).with_name("stepstore")
IMAGE = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)


def memory_uri() -> str:
    """A memory store name no other test uses."""
    return f"memory://test-{uuid.uuid4().hex[:12]}"


def record(uri: str, lr: float, tags: list[str], artifact: Path) -> ss.Run:
    """A finished run with every kind of value: scalars (two epochs), a tensor kept every
    2nd step, an image, a record and an artifact."""
    run = ss.init("sweep", store=uri, params={"lr": lr, "model": {"width": 8}}, tags=tags, **FAST)
    run.policy("w", ss.every(2))
    for step in range(6):
        w = np.full((2, 3), step * lr, np.float32)
        run.log({"loss": lr / (step + 1), "acc": step / 10, "w": w}, epoch=step // 3)
    run.log({"sample": ss.Image(IMAGE, caption="first")}, step=6)
    run.log_record("notes", {"text": f"lr {lr}", "good": lr < 0.5}, step=2)
    run.log_artifact(artifact, name="config.json")
    run.finish()
    return run


def test_the_whole_api_on_a_memory_store(tmp_path):
    uri = memory_uri()
    artifact = tmp_path / "config.json"
    artifact.write_bytes(b'{"lr": 0.1}')
    small = record(uri, 0.1, ["baseline"], artifact)
    artifact.unlink()  # log_artifact copied it into memory
    artifact.write_bytes(b'{"lr": 1.0}')
    large = record(uri, 1.0, ["wide"], artifact)

    store = ss.open(uri)
    assert store.uri == uri
    view = store.run(small.id)
    assert (view.name, view.project, view.status) == (small.name, "sweep", "finished")
    assert view.params == {"lr": 0.1, "model": {"width": 8}} and view.tags == ["baseline"]
    assert view.keys() == ["acc", "loss", "notes", "sample", "w"]
    loss = view.scalars("loss")
    assert loss["step"].tolist() == [0, 1, 2, 3, 4, 5]
    assert loss["epoch"].tolist() == [0, 0, 0, 1, 1, 1]
    assert loss["value"].tolist() == [0.1 / (s + 1) for s in range(6)]
    assert view.summary["acc"]["last"] == 0.5 and view.summary["loss"]["min"] == 0.1 / 6
    tensor = view.tensor("w")
    assert tensor.steps.tolist() == [0, 2, 4] and tensor.dtype == np.float32
    assert np.array_equal(
        tensor[:], np.stack([np.full((2, 3), s * 0.1, np.float32) for s in (0, 2, 4)])
    )
    (image,) = view.images("sample")
    assert (image.step, image.caption) == (6, "first") and np.array_equal(image.array, IMAGE)
    notes = view.records("notes")
    assert notes["step"].tolist() == [2] and notes["text"].tolist() == ["lr 0.1"]
    assert notes["good"].tolist() == [True]
    assert view.artifact("config.json") == b'{"lr": 0.1}'
    assert store.run(large.id).artifact("config.json") == b'{"lr": 1.0}'
    assert view.artifacts()["config.json"]["size"] == len(b'{"lr": 0.1}')

    assert [v.id for v in store.runs(where="params.lr < 0.5 and 'baseline' in tags")] == [small.id]
    assert [v.id for v in store.runs(where="summary.loss.min > 0.1")] == [large.id]
    assert [v.id for v in store.runs(where="params.model.width = 8", project="sweep")] == [
        small.id,
        large.id,
    ]
    assert store.runs(project="other") == []

    table = store.to_arrow(keys="loss", params=True)
    assert table.column("run_id").to_pylist() == [small.id] * 6 + [large.id] * 6
    assert table.column("value").to_pylist() == [
        *(0.1 / (s + 1) for s in range(6)),
        *(1.0 / (s + 1) for s in range(6)),
    ]
    assert table.column("params.lr").to_pylist() == [0.1] * 6 + [1.0] * 6
    best = store.duckdb().sql(
        'SELECT r."params.lr", max(p.value) FROM points p JOIN runs r ON p.run_id = r.id '
        "WHERE p.key = 'acc' GROUP BY 1 ORDER BY 1"
    )
    assert best.fetchall() == [(0.1, 0.5), (1.0, 0.5)]
    assert store.check() == []


def test_anonymous_memory_stores_are_fresh_and_private():
    with ss.init("unit", store="memory://", **FAST) as run:
        run.log({"loss": 0.5})
        assert run.latest("loss") == 0.5
    assert ss.open("memory://").runs() == []


def test_an_anonymous_store_frees_its_arrays_when_closed():
    backend = open_backend("memory://", create=True)
    location = backend.array_location(None)
    location.write("run/w/0", b"bytes")
    assert location.read("run/w/0") == b"bytes"
    backend.close()
    assert location.list("run") == []
    named = open_backend(memory_uri(), create=True)
    kept = named.array_location(None)
    kept.write("run/w/0", b"bytes")
    named.close()
    assert kept.list("run") == ["run/w/0"]


def directory_tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def test_a_memory_store_writes_nothing_anywhere(tmp_path):
    """Recording and reading every kind of value touches no file: not the working
    directory (nor ./stepstore, the default store), HOME, TMPDIR or the XDG directories."""
    places = {
        "HOME": tmp_path / "home",
        "TMPDIR": tmp_path / "tmp",
        "XDG_CACHE_HOME": tmp_path / "xdg-cache",
        "XDG_CONFIG_HOME": tmp_path / "xdg-config",
        "XDG_DATA_HOME": tmp_path / "xdg-data",
        "XDG_STATE_HOME": tmp_path / "xdg-state",
        "XDG_RUNTIME_DIR": tmp_path / "xdg-runtime",
    }
    cwd = tmp_path / "cwd"
    for folder in [*places.values(), cwd]:
        folder.mkdir()
        (folder / "keep.txt").write_text("untouched")
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"weights")
    before = directory_tree(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTORE_")}
    env.update({name: str(path) for name, path in places.items()})
    env["PYTHONPATH"] = str(Path(__file__).parents[1] / "src")
    code = """
        import sys
        import numpy as np
        import stepstore as ss

        uri = "memory://no-disk"
        with ss.init("m", store=uri, params={"lr": 0.5}, flush_interval=0.05) as run:
            run.policy("w", ss.every(2))
            for step in range(300):
                run.log({"loss": 1.0 / (step + 1), "w": np.full(3, step, np.float32)}, epoch=0)
            run.log({"img": ss.Image(np.eye(4))})
            run.log_record("note", {"text": "x"}, step=1)
            run.log_artifact(sys.argv[1])
            assert run.history("loss", last=2).tolist() == [1 / 299, 1 / 300]
        store = ss.open(uri)
        view = store.run(run.id)
        assert view.scalars("loss")["value"].tolist() == [1.0 / (s + 1) for s in range(300)]
        assert view.tensor("w").steps.tolist() == list(range(0, 300, 2))
        assert view.images("img")[0].array.shape == (4, 4)
        assert view.records("note")["text"].tolist() == ["x"]
        assert view.artifact("artifact.bin") == b"weights"
        assert store.to_arrow().num_rows == 300
        assert store.duckdb().sql("SELECT count(*) FROM runs").fetchall() == [(1,)]
        assert store.runs(where="params.lr = 0.5")[0].id == run.id
        assert store.check() == []
        print("ok")
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(artifact)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert directory_tree(tmp_path) == before
    assert not (cwd / "stepstore").exists()


def test_a_memory_store_is_not_found_in_another_process():
    uri = memory_uri()
    with ss.init("here", store=uri, **FAST) as run:
        run.log({"loss": 1.0})
    child = run_python(
        """
        import sys, stepstore as ss
        try:
            ss.open(sys.argv[1])
        except ss.NotAStoreError as exc:
            print(exc)
        """,
        uri,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == (
        f"{uri}: not a stepstore store (none of this name in this process; memory stores live "
        "in one process: the one that created them, until it ends); record into it with "
        f"stepstore.init(store='{uri}') in this process first, and stepstore.copy() it to a "
        "lasting store"
    )
    cli = subprocess.run(
        [STEPSTORE, "show", run.id, "--store", uri], capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 1
    assert "memory stores live in one process" in cli.stdout + cli.stderr


def test_a_fork_child_gets_a_copy_of_the_memory_store():
    """The child reads what the parent recorded before the fork (even while one of the
    parent's runs keeps writing), records into its own copy, and cannot record into the
    parent's run; the parent never sees the child's writes."""
    uri = memory_uri()
    with ss.init("fork", name="before", store=uri, **FAST) as done:
        done.log({"loss": 0.25}, step=7)
    live = ss.init("fork", name="live", store=uri, flush_interval=0.001)
    for step in range(200):
        live.log({"x": float(step)})
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read)
        try:
            store = ss.open(uri)
            seen = store.run(done.id).scalars("loss")[["step", "value"]].values.tolist()
            try:
                live.log({"x": -1.0})
                detached = "logged"
            except ss.RunStateError as exc:
                detached = "forked child" if "a forked child cannot" in str(exc) else str(exc)
            with ss.init("fork", name="child", store=uri, **FAST) as mine:
                mine.log({"y": 2.0})
            names = sorted(v.name for v in ss.open(uri).runs())
            os.write(write, repr((seen, detached, names)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == repr(([[7.0, 0.25]], "forked child", ["before", "child", "live"]))
    live.log({"x": 200.0})
    live.finish()
    store = ss.open(uri)
    assert sorted(v.name for v in store.runs()) == ["before", "live"]
    assert store.run(live.id).scalars("x")["value"].tolist() == [float(s) for s in range(201)]


def test_a_bad_memory_uri_is_refused():
    with pytest.raises(ss.InvalidArgumentError, match="expected memory://NAME"):
        ss.init("x", store="memory://a/b")
