"""The progress line (``console=True``) and system metrics (``system=``)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stepstore as ss

SRC = str(Path(__file__).parents[1] / "src")

#: argv: store. Three epochs of 20 steps with a validation value at each epoch's end.
LOOP = """
import sys, time
import stepstore as ss
run = ss.init("console", name="demo-run", store=sys.argv[1], console=True, flush_interval=0.05)
for epoch in range(3):
    for i in range(20):
        run.log({"loss": 1.0 / (1 + i + 20 * epoch), "acc": i / 20}, epoch=epoch)
        time.sleep(0.025)
    print(f"user line {epoch}", flush=True)
    run.log({"val/acc": 0.5 + epoch / 10}, epoch=epoch, step=run.step - 1, advance=False)
run.finish()
"""


def _run_loop(store: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-c", LOOP, str(store)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_piped_output_gets_one_line_per_epoch_and_a_last_line(store_path):
    result = _run_loop(store_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("user line")] == [
        "user line 0",
        "user line 1",
        "user line 2",
    ]
    epochs = [line for line in lines if " ▸ epoch " in line]
    assert len(epochs) == 3
    for epoch, line in enumerate(epochs):
        assert re.fullmatch(
            rf"demo-run ▸ epoch {epoch}: 20 steps in \d+\.\d s \([\d,.]+ it/s\) · "
            rf"loss {1 / (20 * epoch + 20):.4g} · acc 0\.95 · val/acc {0.5 + epoch / 10:.4g}",
            line,
        ), line
    assert re.fullmatch(r"demo-run ▸ done: last step 59 after \d+\.\d s · .*", lines[-1])
    view = ss.open(store_path).run("demo-run")
    assert view.scalars("loss")["step"].tolist() == list(range(60))
    assert view.scalars("val/acc")["step"].tolist() == [19, 39, 59]


def test_a_terminal_gets_a_live_line_with_prints_above_it(store_path):
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOP, str(store_path)],
        env=env,
        stdout=follower,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    proc.wait(timeout=30)
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode())
    assert proc.returncode == 0, text
    assert re.search(r"demo-run ▸ epoch \d · step \d+ · [\d,.]+ it/s · loss ", text), text
    for epoch in range(3):
        assert f"user line {epoch}" in text
        assert f"demo-run ▸ epoch {epoch}: 20 steps in" in text
    assert "demo-run ▸ done: last step 59" in text


def test_chosen_keys_only(new_run, capsys):
    run = new_run(name="chosen")
    run.console(keys=["acc"], every=0.01)
    for i in range(5):
        run.log({"loss": 0.5, "acc": i / 10})
    run.finish()
    out = capsys.readouterr().out
    assert out.splitlines()[-1].endswith("· acc 0.4")
    assert "loss" not in out


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda run: run.console(keys="loss"), "keys='loss': expected a list of key names"),
        (lambda run: run.console(every=0), "every=0: expected seconds between redraws"),
    ],
)
def test_bad_console_arguments(new_run, call, message):
    run = new_run()
    run.log({"loss": 1.0})
    with pytest.raises(ss.InvalidArgumentError, match=re.escape(message)):
        call(run)
    run.log({"loss": 2.0})
    run.finish()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"console": "yes"}, "console='yes': expected True or False"),
        ({"system": -1}, "system=-1: expected True, False or a number of seconds"),
        ({"system": "fast"}, "system='fast': expected True, False or a number of seconds"),
    ],
)
def test_bad_init_arguments(store_path, kwargs, message):
    with pytest.raises(ss.InvalidArgumentError, match=re.escape(message)):
        ss.init("p", store=store_path, **kwargs)
    assert not store_path.exists() or ss.open(store_path).runs() == []


SYSTEM_KEYS = {
    "system/cpu/percent",
    "system/memory/percent",
    "system/memory/used_gb",
    "system/process/cpu_percent",
    "system/process/rss_mb",
    "system/process/threads",
    "system/disk/percent",
    "system/disk/read_mb_s",
    "system/disk/write_mb_s",
    "system/network/sent_mb_s",
    "system/network/recv_mb_s",
}


def test_system_metrics_are_sampled_with_their_own_steps(store_path):
    run = ss.init("sys", store=store_path, system=0.05, flush_interval=0.05)
    for step in range(30):
        run.log({"loss": 1.0}, step=step)
        time.sleep(0.01)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert set(view.keys()) >= SYSTEM_KEYS  # no GPU here: no system/gpu/ keys
    rss = view.scalars("system/process/rss_mb")
    count = len(rss)
    assert count >= 3
    assert rss["step"].tolist() == list(range(count))
    assert (rss["value"] > 10).all()
    assert rss["time"].is_monotonic_increasing
    memory = view.scalars("system/memory/percent")["value"]
    assert ((memory > 0) & (memory <= 100)).all()
    assert all(len(view.scalars(key)) == count for key in SYSTEM_KEYS)

    resumed = ss.init("sys", store=store_path, resume=run.id, system=0.05, flush_interval=0.05)
    time.sleep(0.3)
    resumed.finish()
    steps = ss.open(store_path).run(run.id).scalars("system/cpu/percent")["step"].tolist()
    assert steps[:count] == list(range(count)) and steps == list(range(len(steps)))
    assert len(steps) > count
