"""The README's quickstart, run as written, records what it says."""

from __future__ import annotations

import re
from pathlib import Path

import stepstore as ss

README = Path(__file__).resolve().parents[1] / "README.md"
BATCHES = 700  # three epochs: 2100 steps, so the example's steps=(1000, 2000) finds points
EPOCHS = 3


def quickstart() -> str:
    """The first ``python`` block after the ``make`` commands, exactly as the README has it."""
    text = README.read_text(encoding="utf-8")
    found = re.search(r"```bash\n(?:make .*\n)+```\s*```python\n(.*?)```", text, re.DOTALL)
    assert found is not None, "README: no ```python block right after the make commands"
    return found.group(1)


def test_quickstart_records_steps_without_gaps(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STEPSTORE_URI", str(tmp_path / "store"))
    namespace = {
        "loader": [((), ())] * BATCHES,  # what `for x, y in loader` unpacks
        "loss": 0.5,
        "acc": 0.75,
        "lr": 1e-3,
        "vl": 0.25,
        "va": 0.875,
    }
    exec(compile(quickstart(), str(README), "exec"), namespace)  # the README's own code

    steps = EPOCHS * BATCHES
    run = ss.open().run(namespace["run"].id)
    loss = run.scalars("loss")
    assert loss["step"].tolist() == list(range(steps))
    assert loss["epoch"].tolist() == [step // BATCHES for step in range(steps)]
    ends = [(epoch + 1) * BATCHES - 1 for epoch in range(EPOCHS)]
    for key in ("val/loss", "val/acc"):
        points = run.scalars(key)
        assert points["step"].tolist() == ends, key
        assert points["epoch"].tolist() == list(range(EPOCHS)), key
    lr = run.scalars("lr")
    assert lr["step"].tolist() == [0]  # on_change("lr"): lr never changes here
    assert run.status == "finished"
    assert namespace["df"]["step"].tolist() == list(range(1000, 2001))


def test_memory_sweep_example_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    """The ``memory://`` section's sweep: three runs in memory, the good ones copied to disk."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## In memory: `memory://`") :]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "README: no ```python block in the memory:// section"
    monkeypatch.chdir(tmp_path)
    namespace = {"train_step": lambda lr: lr}  # a loss equal to the learning rate
    exec(compile(found.group(1), str(README), "exec"), namespace)

    kept = ss.open(tmp_path / "stepstore").runs()
    assert [run.params["lr"] for run in kept] == [1e-3, 1e-2]  # summary.loss.min < 0.1
    assert kept[0].scalars("loss")["value"].tolist() == [1e-3] * 100
    assert [r.params["lr"] for r in ss.open("memory://sweep").runs()] == [1e-3, 1e-2, 1e-1]
