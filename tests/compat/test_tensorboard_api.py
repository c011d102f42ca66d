"""The drop-in SummaryWriter: one script written for ``torch.utils.tensorboard`` run both
ways; what TensorBoard's own reader finds in the event files is what stepstore stored."""

from __future__ import annotations

import io
import re
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorboard")
pytest.importorskip("matplotlib")

from PIL import Image as PILImage
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import make_histogram

import stepstore as ss
from stepstore.compat.tensorboard import SummaryWriter

from ..conftest import run_python

SCRIPT = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
{import_line}


def main(log_dir):
    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    with SummaryWriter(log_dir) as writer:
        for step in range(12):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
            writer.add_scalar("t/acc", torch.tensor(0.1 * step), step, walltime=1.7e9 + step / 3)
            writer.add_scalars("lr", {{"a": 0.01 * step, "b": np.float32(0.5)}}, step)
            if step % 4 == 0:
                writer.add_histogram("weights", torch.randn(200) * (step + 1), step)
        writer.add_scalar("no_step", 3.25)
        writer.add_scalar("no_step", np.array([4.5]))
        writer.add_scalar("back", 1.0, 5)
        writer.add_scalar("back", 2.0, 3)
        writer.add_histogram("ints", np.arange(50), 1, walltime=1.6e9)
        writer.add_image("chw", rng.random((3, 8, 10)), 0)
        writer.add_image("hw", rng.integers(0, 256, (8, 10), dtype=np.uint8), 1, dataformats="HW")
        writer.add_image("hwc", rng.random((6, 5, 3)) * 2 - 0.5, 2, dataformats="HWC")
        writer.add_image("one", torch.rand(1, 4, 4), 3)
        writer.add_images("batch", rng.random((10, 1, 4, 5)), 3)
        writer.add_images("nhwc", rng.integers(0, 256, (2, 3, 4, 3), dtype=np.uint8), 4,
                          dataformats="NHWC")
        figure = plt.figure(figsize=(1, 1), dpi=24)
        plt.plot([0, 1], [1, 0])
        writer.add_figure("figure", figure, 4)
        writer.add_figure("figures", [plt.figure(figsize=(1, 1), dpi=16) for _ in range(2)], 5)
        writer.add_text("notes", "hello **world** é", 5, walltime=1.5e9)
        writer.add_text("notes", "again", 6)
        writer.add_hparams(
            {{"lr": 0.1, "bs": 32, "opt": "adam", "nesterov": True}},
            {{"hparam/acc": 0.75}},
            run_name="hp",
        )
"""


def run_script(import_line: str, log_dir: str) -> None:
    namespace: dict[str, Any] = {}
    exec(SCRIPT.format(import_line=import_line), namespace)  # the user's script, verbatim
    namespace["main"](log_dir)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The script run with TensorBoard and with stepstore: the event files' directory and
    the stepstore run views, and the time window of the stepstore run."""
    root = tmp_path_factory.mktemp("tb")
    tb_dir = str(root / "tb" / "exp")
    run_script("from torch.utils.tensorboard import SummaryWriter", tb_dir)
    store = root / "store"
    mp = pytest.MonkeyPatch()
    mp.setenv("STEPSTORE_URI", str(store))
    began = time.time()
    try:
        run_script("from stepstore.compat.tensorboard import SummaryWriter", "runs/exp")
    finally:
        mp.undo()
    ended = time.time()
    opened = ss.open(store)
    return {
        "tb": tb_dir,
        "run": opened.run("runs/exp"),
        "hp": opened.run("runs/exp/hp"),
        "window": (began, ended),
    }


def accumulator(path: str) -> EventAccumulator:
    acc = EventAccumulator(
        path, size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def micros(seconds: float) -> int:
    return round(seconds * 1e6)


def stored_micros(frame: Any) -> list[int]:
    return [t.value // 1000 for t in frame["time"]]


def test_the_run_is_named_by_log_dir_and_finished(both: dict[str, Any]) -> None:
    run = both["run"]
    assert (run.project, run.status) == ("tensorboard", "finished")
    assert run.params == {}
    assert sorted(run.keys("scalar")) == ["back", "loss", "lr/a", "lr/b", "no_step", "t/acc"]


@pytest.mark.parametrize(
    ("ours", "sub", "tag"),
    [
        ("loss", "", "loss"),
        ("t/acc", "", "t/acc"),
        ("no_step", "", "no_step"),
        ("back", "", "back"),
        ("lr/a", "/lr_a", "lr"),
        ("lr/b", "/lr_b", "lr"),
    ],
)
def test_every_scalar_matches(both: dict[str, Any], ours: str, sub: str, tag: str) -> None:
    events = accumulator(both["tb"] + sub).Scalars(tag)
    frame = both["run"].scalars(ours)
    assert len(events) >= 2
    assert list(frame["step"]) == [e.step for e in events]
    # TensorBoard keeps float32; stepstore keeps the float64 that was given
    assert [float(np.float32(v)) for v in frame["value"]] == [e.value for e in events]
    began, ended = both["window"]
    if ours == "t/acc":  # walltime given: the same wall time to the microsecond
        assert stored_micros(frame) == [micros(e.wall_time) for e in events]
    else:
        assert all(micros(began) <= t <= micros(ended) for t in stored_micros(frame))


def test_scalars_keep_float64_where_tensorboard_rounds(both: dict[str, Any]) -> None:
    assert both["run"].scalars("loss")["value"].tolist() == [1.0 / (s + 1) for s in range(12)]
    assert both["run"].scalars("lr/b").time.nunique() == 12
    lr = both["run"].scalars(["lr/a", "lr/b"])
    assert (lr.groupby("step").time.nunique() == 1).all()  # one wall time per call


def tensorboard_bins() -> list[float]:
    """SummaryWriter's default histogram bins ('tensorflow')."""
    v, buckets = 1e-12, []
    while v < 1e20:
        buckets.append(v)
        v *= 1.1
    return [-b for b in buckets[::-1]] + [0] + buckets


@pytest.mark.parametrize("tag", ["weights", "ints"])
def test_histograms_are_the_values_tensorboard_summarised(both: dict[str, Any], tag: str) -> None:
    events = accumulator(both["tb"]).Histograms(tag)
    series = both["run"].tensor(tag)
    assert events
    assert list(series.steps) == [e.step for e in events]
    for event in events:
        values = np.asarray(series.at(event.step)).astype(float)
        hist = event.histogram_value
        ours = make_histogram(values, tensorboard_bins())
        assert (ours.min, ours.max, ours.num, ours.sum) == (hist.min, hist.max, hist.num, hist.sum)
        assert ours.sum_squares == hist.sum_squares
        assert list(ours.bucket_limit) == list(hist.bucket_limit)
        assert list(ours.bucket) == list(hist.bucket)
    if tag == "ints":
        assert series.dtype == np.int64  # kept as logged


@pytest.mark.parametrize("tag", ["chw", "hw", "hwc", "one", "batch", "nhwc", "figure", "figures"])
def test_images_have_tensorboards_pixels(both: dict[str, Any], tag: str) -> None:
    events = accumulator(both["tb"]).Images(tag)
    ours = both["run"].images(tag)
    assert events
    assert [i.step for i in ours] == [e.step for e in events]
    for image, event in zip(ours, events, strict=True):
        theirs = np.asarray(PILImage.open(io.BytesIO(event.encoded_image_string)))
        assert image.array.dtype == np.uint8
        np.testing.assert_array_equal(image.array, theirs)
    if tag == "batch":  # 10 gray 4x5 images: 8 per row, two rows, RGB
        assert ours[0].array.shape == (8, 40, 3)


def test_text(both: dict[str, Any]) -> None:
    events = accumulator(both["tb"]).Tensors("notes/text_summary")
    records = both["run"].records("notes")
    assert records["step"].tolist() == [e.step for e in events] == [5, 6]
    assert (
        records["text"].tolist()
        == [e.tensor_proto.string_val[0].decode() for e in events]
        == ["hello **world** é", "again"]
    )


def test_hparams_are_a_run_of_their_own(both: dict[str, Any]) -> None:
    acc = accumulator(both["tb"] + "/hp")
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    theirs = HParamsPluginData.FromString(content).session_start_info.hparams
    hp = both["hp"]
    assert hp.params == {"lr": 0.1, "bs": 32, "opt": "adam", "nesterov": True}
    assert set(theirs) == set(hp.params)
    for key, value in hp.params.items():
        if isinstance(value, str):
            assert theirs[key].string_value == value
        else:  # TensorBoard keeps numbers (and, being ints, bools) as float64
            assert theirs[key].number_value == float(value)
    metric = acc.Scalars("hparam/acc")
    frame = hp.scalars("hparam/acc")
    assert list(zip(frame.step, frame.value, strict=True)) == [(e.step, e.value) for e in metric]
    assert hp.status == "finished"


def test_default_log_dir_is_tensorboards(store_path: Path) -> None:
    writer = SummaryWriter(comment="_lr0.1", store=store_path, flush_interval=0.05)
    run_id = writer.run.id  # read before close(): writer.run after it reopens the run
    writer.close()
    pattern = rf"runs/[A-Z][a-z]{{2}}\d\d_\d\d-\d\d-\d\d_{re.escape(socket.gethostname())}_lr0\.1"
    assert re.fullmatch(pattern, writer.get_logdir())
    assert ss.open(store_path).run(run_id).name == writer.get_logdir()


def test_a_call_after_close_continues_the_run(store_path: Path) -> None:
    writer = SummaryWriter("exp", project="p", store=store_path, flush_interval=0.05)
    writer.add_scalar("x", 1.0, 0)
    writer.close()
    writer.close()  # a second close does nothing
    assert ss.open(store_path).run("exp").status == "finished"
    writer.add_scalar("x", 2.0, 1)
    writer.flush()
    writer.close()
    view = ss.open(store_path).run("exp")
    assert (view.project, view.status, view.scalars("x").value.tolist()) == (
        "p",
        "finished",
        [1.0, 2.0],
    )


def test_an_exception_in_the_with_block_marks_the_run_crashed(store_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), SummaryWriter("w", store=store_path) as w:
        w.add_scalar("x", 1.0)
        raise RuntimeError("boom")
    assert ss.open(store_path).run("w").status == "crashed"


def test_histogram_raw_is_a_record(store_path: Path) -> None:
    with SummaryWriter("raw", store=store_path) as writer:
        writer.add_histogram_raw("h", 0, 3, 4, 6, 14, [1, 2, 3], [1, 2, 1], global_step=2)
        with pytest.raises(ss.InvalidArgumentError, match="3 bucket_limits but 2 bucket_counts"):
            writer.add_histogram_raw("h", 0, 3, 4, 6, 14, [1, 2, 3], [1, 2], global_step=3)
    entry = ss.open(store_path).run("raw").record_entries("h")
    assert [(e.step, e.fields) for e in entry] == [
        (
            2,
            {
                "min": 0.0,
                "max": 3.0,
                "num": 4,
                "sum": 6.0,
                "sum_squares": 14.0,
                "bucket_limits": [1, 2, 3],
                "bucket_counts": [1, 2, 1],
            },
        )
    ]


@pytest.mark.parametrize(
    ("call", "args", "message"),
    [
        (
            "add_graph",
            (None,),
            r"SummaryWriter\.add_graph is not supported by stepstore: save the model",
        ),
        (
            "add_embedding",
            (None,),
            r"add_embedding is not supported .* add_tensor\(tag, mat, step\)",
        ),
        ("add_audio", (None,), r"add_audio is not supported .*writer\.run\.log_artifact"),
        ("add_video", (None,), r"add_video is not supported .* add_images"),
        ("add_pr_curve", ("t", None, None), r"add_pr_curve is not supported .* add_tensor"),
        ("add_custom_scalars_marginchart", ([],), r"add_custom_scalars is not supported"),
        ("add_mesh", ("t", None), r"add_mesh is not supported"),
        ("add_image_with_boxes", ("t", None, None), r"add_image_with_boxes is not supported"),
        ("add_onnx_graph", ("m.onnx",), r"add_onnx_graph is not supported"),
    ],
)
def test_calls_stepstore_cannot_honour_raise(
    store_path: Path, call: str, args: tuple[Any, ...], message: str
) -> None:
    with SummaryWriter("u", store=store_path) as writer:
        with pytest.raises(ss.StepstoreError, match=message) as caught:
            getattr(writer, call)(*args)
        assert isinstance(caught.value, NotImplementedError)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda w: w.add_scalar("s", np.zeros(2)),
            r"tag 's': a scalar must have one element, got shape \(2,\)",
        ),
        (lambda w: w.add_scalar("s", 1.0, -1), r"step=-1: expected an integer in \[0, "),
        (lambda w: w.add_scalar("s", 1.0, 1.5), r"add_scalar: step 1.5: expected a whole number"),
        (lambda w: w.add_histogram("h", []), r"add_histogram: tag 'h': the values are empty"),
        (
            lambda w: w.add_image("i", np.zeros((3, 4))),
            r"shape \(3, 4\) has 2 dimensions but dataformats='CHW' names 3",
        ),
        (
            lambda w: w.add_image("i", np.zeros((3, 4)), dataformats="HH"),
            r"dataformats='HH': expected the letters of NCHW",
        ),
        (
            lambda w: w.add_images("i", np.zeros((2, 2, 4, 4))),
            r"batch of shape \(2, 2, 4, 4\) \(NCHW\): expected",
        ),
        (lambda w: w.add_text("t", 3), r"add_text: tag 't': text_string 3 is not a string"),
        (lambda w: w.add_hparams({"a": [1]}, {}), r"hparam 'a': \[1\] of type list; expected int"),
        (lambda w: w.add_hparams([], {}), r"expected dicts, got list and dict"),
    ],
)
def test_bad_calls_name_what_was_wrong(store_path: Path, call: Any, message: str) -> None:
    with (
        SummaryWriter("bad", store=store_path) as writer,
        pytest.raises(ss.StepstoreError, match=message),
    ):
        call(writer)


def test_importing_it_imports_no_torch_tensorboard_or_matplotlib() -> None:
    result = run_python(
        """
        import sys
        import stepstore.compat.tensorboard
        heavy = ("torch", "tensorboard", "matplotlib", "mlflow")
        print(sorted(m for m in heavy if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
