"""Stores for the API, report and CLI tests: what is logged is kept, so tests compare the
API's answers with it.

``demo`` (module-scoped, one store per backend) holds:

- ``alpha`` (project ``p1``, finished): scalars ``loss`` (NaN, inf, -inf among them, with
  epochs), ``val/acc`` (per epoch) and keys with odd characters; tensors ``weights/fc``
  (300x270 float32, reduced for a heatmap), ``act/conv`` (2x3x4x5) and ``bias`` (1-D, NaN);
  images ``samples`` (two at step 5, captions with ``</script>``); records ``eval``;
- ``beta`` (project ``p2``): still running while the module runs (live);
- ``big``: ``loss`` of :data:`BIG` points, one spike of 1e6 at :data:`SPIKE`, 100 epochs;
- ``blowup`` (project ``p3``): ``loss`` over 20 steps, NaN at :data:`BLOWUP`, which fires its
  flight recorder's ``on_nan('loss')``, then a ``dump_flight`` at the last step (two events).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

import stepstore as ss
from stepstore.ui import create_app

from ..backend_fixtures import SERVERS, fresh_store

#: Points of the big series and the step of its one spike.
BIG = 1_000_000
SPIKE = 654_321
#: The step at which the ``blowup`` run's loss turns NaN.
BLOWUP = 12
#: Keys that need encoding in a query string.
ODD_KEYS = ("a b/ü/..", "x[1]*?", "k&=%+#~")
CAPTION = "</script><script>alert(1)</script> & <!-- ü"
FAST = {"flush_interval": 0.05}


@dataclass
class Demo:
    """A recorded store and what was logged into it."""

    uri: str
    ids: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    images: list[tuple[int, str | None, np.ndarray]] = field(default_factory=list)
    records: list[tuple[int, dict]] = field(default_factory=list)
    live: ss.Run | None = None


def record_alpha(demo: Demo) -> None:
    """The finished run with every kind of key."""
    rng = np.random.default_rng(1)
    params = {"lr": 0.01, "model": {"width": 64, "act": "relu"}, "tags_like": [1, 2]}
    with ss.init(
        "p1", name="alpha", store=demo.uri, params=params, tags=["baseline"], **FAST
    ) as run:
        demo.ids["alpha"] = run.id
        for step in range(100):
            value = {5: float("nan"), 7: float("inf"), 9: float("-inf")}.get(step, step * 0.5)
            run.log(
                {"loss": value, **dict.fromkeys(ODD_KEYS, step / 3)}, step=step, epoch=step // 10
            )
            if step % 10 == 9:
                run.log({"val/acc": step / 100}, step=step)
        tensors = {
            "weights/fc": {
                s: rng.standard_normal((300, 270)).astype(np.float32) for s in (0, 10, 20)
            },
            "act/conv": {s: rng.standard_normal((2, 3, 4, 5)) for s in (0, 1)},
            "bias": {s: np.array([s, np.nan, np.inf, -1, 0, 2, 3], np.float64) for s in (3, 4)},
        }
        for key, by_step in tensors.items():
            for step, array in by_step.items():
                run.log({key: array}, step=step)
        demo.tensors = tensors
        pictures = [
            (0, "first", rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)),
            (5, CAPTION, rng.integers(0, 256, (8, 6), dtype=np.uint8)),
            (5, None, rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)),
        ]
        run.log({"samples": [ss.Image(pictures[0][2], caption="first")]}, step=0)
        run.log({"samples": [ss.Image(a, caption=c) for _, c, a in pictures[1:]]}, step=5)
        demo.images = pictures
        demo.records = [(2, {"acc": 0.5, "label": "x"}), (6, {"acc": 0.75, "extra": [1, 2]})]
        for step, record in demo.records:
            run.log_record("eval", record, step=step)


def record_big(demo: Demo) -> None:
    """The long series with one spike."""
    values = np.random.default_rng(2).standard_normal(BIG)
    values[SPIKE] = 1e6
    with ss.init("p2", name="big", store=demo.uri, journal_slots=1 << 21, **FAST) as run:
        demo.ids["big"] = run.id
        log = run.log
        for step, value in enumerate(values.tolist()):
            log({"loss": value}, epoch=step // (BIG // 100))


def record_blowup(demo: Demo) -> None:
    """The run whose flight recorder fired, then was dumped by hand."""
    with ss.init("p3", name="blowup", store=demo.uri, **FAST) as run:
        demo.ids["blowup"] = run.id
        run.flight("acts/*", steps=3, trigger=ss.on_nan("loss"))
        for step in range(20):
            loss = float("nan") if step == BLOWUP else 1.0 / (step + 1)
            run.log({"loss": loss, "acts/h": np.full(4, step, np.float32)}, step=step)
        run.dump_flight("checked by hand")


def record(uri: str) -> Demo:
    """Record the demo store at ``uri``; ``beta`` stays running (``Demo.live``)."""
    demo = Demo(uri)
    record_alpha(demo)
    record_big(demo)
    record_blowup(demo)
    beta = ss.init("p2", name="beta", store=uri, params={"lr": 0.1}, **FAST)
    beta.log({"loss": 1.0}, step=0)
    beta.flush()
    demo.ids["beta"] = beta.id
    demo.live = beta
    return demo


@pytest.fixture(scope="module", params=["sqlite", *SERVERS])
def demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Demo]:
    """The demo store in each backend, recorded once per test module."""
    tmp = tmp_path_factory.mktemp(f"demo-{request.param}")
    with pytest.MonkeyPatch.context() as patch, fresh_store(request.param, tmp, patch) as uri:
        recorded = record(uri)
        try:
            yield recorded
        finally:
            if recorded.live is not None:
                recorded.live.finish()


@contextlib.contextmanager
def client(store: str | Path | ss.Store, **options: object) -> Iterator[TestClient]:
    """A client of the app on ``store`` (requests come from http://127.0.0.1)."""
    with TestClient(create_app(store, **options), base_url="http://127.0.0.1") as test_client:  # type: ignore[arg-type]
        yield test_client
