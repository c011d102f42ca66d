"""``SummaryWriter`` with the signatures of ``torch.utils.tensorboard.SummaryWriter``,
recording into a stepstore run instead of event files::

    from stepstore.compat.tensorboard import SummaryWriter   # was: from torch.utils.tensorboard

How each call is stored (``global_step=None`` is step 0 and ``walltime`` the points' wall
time, as in TensorBoard; a tag may take several values at one step or go back, as there):

- ``add_scalar(tag, v)``: the scalar series ``tag``, as float64 (TensorBoard keeps float32).
- ``add_scalars(main, {name: v})``: the series ``main/name`` (TensorBoard: a run per name).
- ``add_histogram(tag, values)``: the values themselves, a tensor series ``tag`` from which
  any histogram (and TensorBoard's min, max, num, sum) is exact; ``bins`` only shapes
  TensorBoard's display. ``writer.run.reduce(tag, "histogram")`` keeps counts instead.
- ``add_histogram_raw``: a record ``tag`` with the given fields; ``add_tensor``: a tensor.
- ``add_image``, ``add_images``, ``add_figure``: the image ``tag`` with the pixels
  TensorBoard stores (same scaling, clipping, gray to RGB, grid of 8 columns for batches).
- ``add_text(tag, s)``: a record ``tag`` with the field ``text``.
- ``add_hparams(hparams, metrics)``: as TensorBoard does, a run of its own named
  ``LOG_DIR/RUN_NAME`` whose params are ``hparams`` and whose scalars are ``metrics``.

``log_dir`` is the run's name (TensorBoard's default ``runs/DATE_HOST`` + ``comment``);
each writer records a new run, so an earlier run with the same ``log_dir`` stays as it
ended and ``purge_step`` has nothing to hide. ``max_queue``, ``flush_secs`` and
``filename_suffix`` concern event files and change nothing here.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, InvalidValueError
from ..recording.run import Run
from ..recording.start import init
from ..tensors.images import Image
from . import step_of, unsupported


class SummaryWriter:
    """Records what ``torch.utils.tensorboard.SummaryWriter`` would write, into a run.

    Args:
        log_dir: The run's name; ``runs/%b%d_%H-%M-%S_HOSTNAME`` + ``comment`` when empty.
        comment: Appended to the default ``log_dir`` only.
        purge_step, max_queue, flush_secs, filename_suffix: Accepted; see the module.
        project: The stepstore project of the run.
        store: Store path or URI, as for :func:`stepstore.init`.
        **init_kwargs: Other :func:`stepstore.init` arguments (``params``, ``tags``, ...).

    The run starts here (TensorBoard creates its event file here) and is finished by
    :meth:`close`; a call after ``close`` continues it, as TensorBoard reopens its file.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
        filename_suffix: str = "",
        *,
        project: str = "tensorboard",
        store: str | os.PathLike[str] | None = None,
        **init_kwargs: Any,
    ) -> None:
        if not log_dir:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment}")
        self.log_dir = os.fspath(log_dir)
        self.purge_step = purge_step
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.filename_suffix = filename_suffix
        self._project = project
        self._store = store
        self._init_kwargs = init_kwargs
        self._closed = False
        self._run = self._start(self.log_dir, **init_kwargs)

    def _start(self, name: str, **kwargs: Any) -> Run:
        return init(self._project, name=name, store=self._store, allow_rewind=True, **kwargs)

    @property
    def run(self) -> Run:
        """The stepstore run this writer records into (reopened if it was closed)."""
        if self._closed:
            kept = {k: v for k, v in self._init_kwargs.items() if k not in ("params", "tags")}
            self._run = init(
                self._project, store=self._store, resume=self._run.id, allow_rewind=True, **kept
            )
            self._closed = False
        return self._run

    def get_logdir(self) -> str:
        """The ``log_dir`` (the run's name)."""
        return self.log_dir

    # -- values ------------------------------------------------------------------------

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None:
        """Record a scalar (a number or a one-element array/tensor) as ``tag``."""
        step = step_of("add_scalar", global_step)
        self.run.log({tag: _scalar(tag, scalar_value)}, step=step, time=walltime)

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: Mapping[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Record each ``{name: value}`` as the scalar series ``main_tag/name``, one wall
        time for all."""
        step = step_of("add_scalars", global_step)
        walltime = time.time() if walltime is None else walltime
        values = {f"{main_tag}/{name}": _scalar(name, v) for name, v in tag_scalar_dict.items()}
        self.run.log(values, step=step, time=walltime)

    def add_tensor(
        self, tag: str, tensor: Any, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        """Record a tensor (any array) as the tensor series ``tag``."""
        step = step_of("add_tensor", global_step)
        self.run.log({tag: _at_least_1d(tensor)}, step=step, time=walltime)

    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: Any = "tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        """Record the values a histogram is made of as the tensor series ``tag``."""
        step = step_of("add_histogram", global_step)
        array = _at_least_1d(values)
        if _size(array) == 0:
            raise InvalidValueError(f"add_histogram: tag {tag!r}: the values are empty")
        self.run.log({tag: array}, step=step, time=walltime)

    def add_histogram_raw(
        self,
        tag: str,
        min: float,  # noqa: A002 - TensorBoard's argument names
        max: float,  # noqa: A002
        num: int,
        sum: float,  # noqa: A002
        sum_squares: float,
        bucket_limits: Any,
        bucket_counts: Any,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Record a histogram given by its statistics and buckets as a record ``tag``."""
        limits, counts = np.asarray(bucket_limits).tolist(), np.asarray(bucket_counts).tolist()
        if len(limits) != len(counts):
            raise InvalidArgumentError(
                f"add_histogram_raw: tag {tag!r}: {len(limits)} bucket_limits but "
                f"{len(counts)} bucket_counts; expected one limit per bucket"
            )
        record = {
            "min": float(min),
            "max": float(max),
            "num": int(num),
            "sum": float(sum),
            "sum_squares": float(sum_squares),
            "bucket_limits": limits,
            "bucket_counts": counts,
        }
        step = step_of("add_histogram_raw", global_step)
        self.run.log_record(tag, record, step=step, time=walltime)

    def add_image(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "CHW",
    ) -> None:
        """Record an image (``dataformats`` CHW, HWC, HW, ...) as TensorBoard stores it."""
        image = Image(_tensorboard_pixels(tag, img_tensor, dataformats))
        step = step_of("add_image", global_step)
        self.run.log({tag: image}, step=step, time=walltime)

    def add_images(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "NCHW",
    ) -> None:
        """Record a batch of images as one grid image, as TensorBoard does."""
        self.add_image(tag, img_tensor, global_step, walltime, dataformats)

    def add_figure(
        self,
        tag: str,
        figure: Any,
        global_step: int | None = None,
        close: bool = True,
        walltime: float | None = None,
    ) -> None:
        """Record a matplotlib figure (or a list of them, as a grid) as an image."""
        if isinstance(figure, list):
            pixels = np.stack([_render(f, close) for f in figure])
            self.add_image(tag, pixels, global_step, walltime, dataformats="NCHW")
        else:
            self.add_image(tag, _render(figure, close), global_step, walltime, dataformats="CHW")

    def add_text(
        self,
        tag: str,
        text_string: str,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Record a text as the record ``tag`` with the field ``text``."""
        if not isinstance(text_string, str):
            raise InvalidValueError(
                f"add_text: tag {tag!r}: text_string {text_string!r:.60} is not a string"
            )
        step = step_of("add_text", global_step)
        self.run.log_record(tag, {"text": text_string}, step=step, time=walltime)

    def add_hparams(
        self,
        hparam_dict: dict[str, Any],
        metric_dict: dict[str, Any],
        hparam_domain_discrete: dict[str, list[Any]] | None = None,
        run_name: str | None = None,
        global_step: int | None = None,
    ) -> None:
        """Record a run of its own, ``LOG_DIR/RUN_NAME`` (the time when no ``run_name``),
        with ``hparam_dict`` as its params and ``metric_dict`` as scalars; the discrete
        domains, when given, as its record ``hparams/domain_discrete``."""
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise InvalidArgumentError(
                "add_hparams: hparam_dict and metric_dict: expected dicts, got "
                f"{type(hparam_dict).__name__} and {type(metric_dict).__name__}"
            )
        params = {key: _hparam(key, value) for key, value in hparam_dict.items()}
        step = step_of("add_hparams", global_step)
        name = f"{self.log_dir}/{run_name or time.time()}"
        with self._start(name, params=params) as child:
            if hparam_domain_discrete:
                child.log_record("hparams/domain_discrete", hparam_domain_discrete, step=step)
            child.log({k: _scalar(k, v) for k, v in metric_dict.items()}, step=step)

    # -- lifecycle ---------------------------------------------------------------------

    def flush(self) -> None:
        """Block until everything recorded so far is in the store."""
        if not self._closed:
            self.run.flush()

    def close(self, status: str = "finished") -> None:
        """Finish the run (with ``status``); a second call does nothing."""
        if not self._closed:
            self._run.finish(status)
            self._closed = True

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> None:
        self.close("finished" if kind is None else "crashed")

    # -- what stepstore does not record ------------------------------------------------

    def add_graph(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        raise unsupported(
            "SummaryWriter.add_graph", "save the model (torch.save) and writer.run.log_artifact"
        )

    def add_onnx_graph(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        raise unsupported("SummaryWriter.add_onnx_graph", "use writer.run.log_artifact(path)")

    def add_embedding(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        raise unsupported(
            "SummaryWriter.add_embedding",
            "record the matrix with add_tensor(tag, mat, step) and its labels with "
            "writer.run.log_record",
        )

    def add_audio(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        raise unsupported(
            "SummaryWriter.add_audio",
            "record the samples with add_tensor or a sound file with writer.run.log_artifact",
        )

    def add_video(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        raise unsupported(
            "SummaryWriter.add_video",
            "record frames with add_images or a video file with writer.run.log_artifact",
        )

    def add_pr_curve(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        raise unsupported(
            "SummaryWriter.add_pr_curve", "record labels and predictions with add_tensor"
        )

    def add_pr_curve_raw(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        raise unsupported(
            "SummaryWriter.add_pr_curve_raw", "record the curve's counts with add_tensor"
        )

    def add_mesh(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        raise unsupported(
            "SummaryWriter.add_mesh", "record vertices, colors and faces with add_tensor"
        )

    def add_image_with_boxes(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        raise unsupported(
            "SummaryWriter.add_image_with_boxes",
            "record the image with add_image and the boxes with add_tensor",
        )

    def add_custom_scalars(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        raise unsupported(
            "SummaryWriter.add_custom_scalars",
            "layouts are TensorBoard display settings; stepstore ui plots any keys together",
        )

    def add_custom_scalars_multilinechart(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        self.add_custom_scalars()

    def add_custom_scalars_marginchart(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: raises UnsupportedError."""
        self.add_custom_scalars()


def _scalar(tag: str, value: Any) -> Any:
    """A value TensorBoard takes as a scalar, as one ``Run.log`` takes: a one-element array
    or tensor becomes 0-d (a device tensor stays on its device)."""
    if getattr(value, "ndim", 0) and hasattr(value, "reshape"):
        if _size(value) != 1:
            raise InvalidValueError(
                f"tag {tag!r}: a scalar must have one element, got shape {tuple(value.shape)}"
            )
        return value.reshape(())
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


def _size(array: Any) -> int:
    """The number of elements of a NumPy array or a tensor."""
    numel = getattr(array, "numel", None)  # torch's size is a method
    return int(numel() if callable(numel) else array.size)


def _at_least_1d(values: Any) -> Any:
    """An array or tensor with at least one dimension (lists become NumPy arrays)."""
    if not hasattr(values, "reshape"):
        values = np.asarray(values)
    return values.reshape(1) if values.ndim == 0 else values


def _to_numpy(values: Any) -> np.ndarray:
    """A NumPy copy of an array or tensor, as TensorBoard's ``make_np`` makes it."""
    if (type(values).__module__ or "").startswith("torch"):
        values = values.detach().cpu()
        if str(values.dtype) == "torch.bfloat16":
            values = values.half()
        return values.numpy()
    return np.asarray(values)


def _tensorboard_pixels(tag: str, img_tensor: Any, dataformats: str) -> np.ndarray:
    """The uint8 HxWx3 (or 4) pixels TensorBoard's ``image()`` stores for these arguments:
    transposed to HWC, a batch laid out 8 per row, gray repeated to RGB, floats times 255,
    clipped to 0..255."""
    array = _to_numpy(img_tensor)
    form = dataformats.upper()
    if len(set(form)) != len(form) or not set(form) <= set("NCHW") or not 2 <= len(form) <= 4:
        raise InvalidArgumentError(
            f"add_image: tag {tag!r}: dataformats={dataformats!r}: expected the letters of "
            "NCHW, each once, e.g. 'CHW', 'HWC', 'HW', 'NCHW'"
        )
    if array.ndim != len(form):
        raise InvalidValueError(
            f"add_image: tag {tag!r}: shape {array.shape} has {array.ndim} dimensions but "
            f"dataformats={dataformats!r} names {len(form)}"
        )
    if len(form) == 4:
        array = _grid(tag, array.transpose([form.find(c) for c in "NCHW"])).transpose(1, 2, 0)
    elif len(form) == 3:
        array = array.transpose([form.find(c) for c in "HWC"])
        if array.shape[2] == 1:
            array = np.concatenate([array, array, array], 2)
    else:
        array = array.transpose([form.find(c) for c in "HW"])
        array = np.stack([array, array, array], 2)
    scale = 1 if array.dtype == np.uint8 else 255
    return (array.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)


def _grid(tag: str, batch: np.ndarray) -> np.ndarray:
    """A CHW grid of an NCHW batch, 8 images per row, as TensorBoard lays it out."""
    if batch.shape[1] == 1:
        batch = np.concatenate([batch, batch, batch], 1)
    if batch.shape[1] != 3 or batch.shape[0] == 0:
        raise InvalidValueError(
            f"add_images: tag {tag!r}: batch of shape {batch.shape} (NCHW): expected at least "
            "one image with 1 or 3 channels"
        )
    count, _, height, width = batch.shape
    columns = min(count, 8)
    rows = -(-count // columns)
    canvas = np.zeros((3, height * rows, width * columns), dtype=batch.dtype)
    for i, image in enumerate(batch):
        y, x = divmod(i, columns)
        canvas[:, y * height : (y + 1) * height, x * width : (x + 1) * width] = image
    return canvas


def _render(figure: Any, close: bool) -> np.ndarray:
    """A matplotlib figure's RGB pixels, CHW, as TensorBoard renders it (Agg canvas)."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    width, height = figure.canvas.get_width_height()
    pixels = np.frombuffer(canvas.buffer_rgba(), dtype=np.uint8).reshape(height, width, 4)
    if close:
        plt.close(figure)
    return np.moveaxis(pixels[:, :, :3], 2, 0)


def _hparam(key: str, value: Any) -> Any:
    """A hyper-parameter TensorBoard accepts (bool, int, float, str, None or a one-element
    tensor) as a param value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "reshape") and hasattr(value, "tolist"):
        flat = value.reshape(-1).tolist()
        if flat:
            return flat[0]
    raise InvalidArgumentError(
        f"add_hparams: hparam {key!r}: {value!r:.60} of type {type(value).__name__}; expected "
        "int, float, str, bool or a one-element tensor"
    )
