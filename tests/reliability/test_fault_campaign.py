"""The fault campaign (``benchmarks/fault_campaign.py``) for a short, fixed budget: random
SIGKILLs (also in ``finish()`` and in a resumed run), a full disk (root only), byte flips in
a finished store and concurrent writers with a reader must all pass.

It runs as a subprocess, the way a user runs it, and is judged by its JSON report: zero
failed trials and at least one trial of every kind this machine allows (the campaign always
runs each available kind once, even past its budget).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "fault_campaign.py"
KINDS = {"kill", "kill-finish", "kill-resume", "full-disk", "byte-flip", "writers"}


@pytest.mark.slow
def test_a_short_fault_campaign_finds_nothing(tmp_path: Path) -> None:
    out = tmp_path / "campaign.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPSTORE_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--minutes",
            "0.4",
            "--seed",
            "20261202",
            "--flush-interval",
            "0.5",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert out.exists(), f"no report (exit {done.returncode}):\n{done.stderr[-4000:]}"
    report = json.loads(out.read_text())
    failures = "\n".join(
        f"{f['kind']} seed={f['seed']}: {f['failure']}" for f in report["failures"]
    )
    assert report["totals"]["failed"] == 0, f"{failures}\n\n{done.stdout}"
    assert done.returncode == 0, done.stderr[-4000:]
    assert set(report["skipped"]) <= {"full-disk"}, report["skipped"]
    tried = {kind for kind, k in report["kinds"].items() if k["trials"]}
    assert tried == KINDS - set(report["skipped"]), tried
    assert report["totals"]["acked"] > 0
    # every host scalar acknowledged before a kill is in the store
    scalars = report["data_kinds"]["scalar"]
    assert scalars["acked"] > 0 and scalars["lost"] == 0, scalars
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.json"]
