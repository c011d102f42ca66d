"""The README's recipe for a W&B history CSV (kept identical to the README's snippet)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

import stepstore as ss

# -- the README snippet, verbatim ----------------------------------------------------------


def import_wandb_csv(path, project, name=None, store=None):
    """Record a W&B history export (the UI's CSV, or run.history().to_csv()) as a run."""
    history = pd.read_csv(path)
    metrics = [c for c in history.select_dtypes("number") if not c.startswith("_")]
    with ss.init(project, name=name, store=store) as run:
        for row in history.to_dict("records"):
            values = {key: row[key] for key in metrics if pd.notna(row[key])}
            if values:
                run.log(values, step=int(row["_step"]), time=row.get("_timestamp"))
    return run.id


# ------------------------------------------------------------------------------------------


def test_a_wandb_history_becomes_a_run(tmp_path: Path) -> None:
    csv = tmp_path / "history.csv"
    csv.write_text(
        "_step,_runtime,_timestamp,loss,val/acc,media\n"
        "0,1.5,1700000000.25,0.9,,a.png\n"
        "1,2.5,1700000001.5,0.7,,b.png\n"
        "2,3.5,1700000002.75,0.5,0.81,\n"
        "3,4.5,1700000003.0,,,c.png\n"
        "4,5.5,1700000004.125,nan,0.9,\n"
    )
    run_id = import_wandb_csv(csv, "from-wandb", name="imported", store=tmp_path / "store")
    view = ss.open(tmp_path / "store").run(run_id)
    assert (view.name, view.project, view.status) == ("imported", "from-wandb", "finished")
    assert sorted(view.keys("scalar")) == ["loss", "val/acc"]  # no _columns, no text columns
    loss = view.scalars("loss")
    assert loss.step.tolist() == [0, 1, 2]
    assert loss.value.tolist() == [0.9, 0.7, 0.5]
    assert [t.value // 1000 for t in loss.time] == [
        1700000000250000,
        1700000001500000,
        1700000002750000,
    ]
    acc = view.scalars("val/acc")
    assert list(zip(acc.step, acc.value, strict=True)) == [(2, 0.81), (4, 0.9)]
    assert not any(math.isnan(v) for v in acc.value)
