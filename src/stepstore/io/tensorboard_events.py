"""Decode the event files of one TensorBoard run directory into what stepstore stores.

Scalar events in the layout every TensorBoard writer uses (``wall_time``, ``step``, one
summary value of ``tag`` and ``simple_value``) are decoded with NumPy, many records at once;
every other record is parsed as an ``Event`` protobuf (from the ``tensorboard`` package,
the ``compat`` extra). What maps to what:

- ``simple_value`` and tensors of the ``scalars`` plugin: scalar series (float32 values
  kept exactly, as float64);
- ``histo`` (HistogramProto): tensor series ``TAG/histogram`` (bucket counts, float64),
  ``TAG/histogram_edges`` (the bucket limits after a first left edge, float64) and
  ``TAG/histogram_stats`` (``min, max, num, sum, sum_squares``, float64);
- ``image`` (and tensors of the ``images`` plugin): images, PNG decoded to pixels;
- tensors of the ``text`` plugin: records ``{"text": ...}``;
- the ``hparams`` plugin: the run's params (its hyper-parameter values) and a record
  ``hparams`` with the metric tags (``metrics``), and where given the discrete domains
  (``domains``) and the session status (``status``);
- other numeric tensors: tensor series of the same dtype and shape.

Anything else (audio, graphs, string tensors of other plugins) is reported once per tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..errors import MissingDependencyError
from .tfrecord import Damage, Records, gather, read_records

#: Keys of the tensor series a TensorBoard histogram becomes (suffixes of its tag).
HISTOGRAM_SUFFIXES = ("/histogram", "/histogram_edges", "/histogram_stats")
#: The record key holding the hparams plugin's experiment (metric tags and domains).
HPARAMS_KEY = "hparams"
_HPARAMS_TAGS = (
    "_hparams_/experiment",
    "_hparams_/session_start_info",
    "_hparams_/session_end_info",
)


def protos() -> Any:
    """The ``tensorboard`` package's modules this needs; MissingDependencyError if absent."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
        from tensorboard.util import tensor_util
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading and writing TensorBoard event files needs the 'tensorboard' package, "
            f"which cannot be imported ({exc}); install it with: pip install 'stepstore[compat]'"
        ) from exc
    return SimpleNamespace(
        event_pb2=event_pb2,
        summary_pb2=summary_pb2,
        plugin_data_pb2=plugin_data_pb2,
        api_pb2=api_pb2,
        tensor_util=tensor_util,
    )


@dataclass
class Scalars:
    """One tag's scalar points, in the order they were written."""

    order: list[np.ndarray] = field(default_factory=list)
    step: list[np.ndarray] = field(default_factory=list)
    time: list[np.ndarray] = field(default_factory=list)
    value: list[np.ndarray] = field(default_factory=list)

    def add(self, order: Any, step: Any, time: Any, value: Any) -> None:
        self.order.append(np.asarray(order, np.int64).reshape(-1))
        self.step.append(np.asarray(step, np.int64).reshape(-1))
        self.time.append(np.asarray(time, np.float64).reshape(-1))
        self.value.append(np.asarray(value, np.float64).reshape(-1))

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps, wall times and values, in file order then (stably) in step order."""
        order = np.concatenate(self.order)
        pick = np.argsort(order, kind="stable")
        step = np.concatenate(self.step)[pick]
        if len(step) > 1 and bool((step[1:] < step[:-1]).any()):
            pick = pick[np.argsort(step, kind="stable")]
            step = np.concatenate(self.step)[pick]
        return step, np.concatenate(self.time)[pick], np.concatenate(self.value)[pick]


@dataclass
class Item:
    """One non-scalar value: what it becomes (``tensor``, ``image``, ``record``), its key,
    step, wall time and payload (an array, a list of pixel arrays, or a dict)."""

    order: int
    kind: str
    key: str
    step: int
    time: float
    payload: Any


@dataclass
class RunEvents:
    """Everything decoded from one directory's event files."""

    scalars: dict[str, Scalars] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    #: ``(file, what)`` for each tag or event kind not imported, once each.
    unsupported: list[tuple[str, str]] = field(default_factory=list)
    damage: dict[str, list[Damage]] = field(default_factory=dict)
    #: ``(number of the file's first record, file)`` for each file read.
    files: list[tuple[int, str]] = field(default_factory=list)
    events: int = 0

    def scalar(self, tag: str) -> Scalars:
        found = self.scalars.get(tag)
        if found is None:
            found = self.scalars[tag] = Scalars()
        return found

    def file_of(self, order: int) -> str:
        """The file (relative name) of the record numbered ``order``."""
        name = ""
        for base, file in self.files:
            if base > order:
                break
            name = file
        return name


# -- the fast path: scalar events in the common layout ---------------------------------------


def _varint_widths(rows: np.ndarray, at: int) -> np.ndarray:
    """Bytes of the varint starting at column ``at`` of each row (0 where it runs past 10)."""
    width = np.zeros(len(rows), np.int64)
    open_ = np.ones(len(rows), bool)
    for i in range(10):
        if at + i >= rows.shape[1]:
            break
        ends = open_ & (rows[:, at + i] < 0x80)
        width[ends] = i + 1
        open_ &= ~ends
    return width


def _varints(rows: np.ndarray, at: int, width: int) -> np.ndarray:
    value = np.zeros(len(rows), np.uint64)
    for i in range(width):
        value |= (rows[:, at + i].astype(np.uint64) & np.uint64(0x7F)) << np.uint64(7 * i)
    return value.view(np.int64)


def _simple_scalars(
    rows: np.ndarray, step_width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Match rows (records of one length, one step varint width) against the layout
    ``wall_time, step, summary{value{tag, simple_value}}``; the matching rows' mask, steps,
    wall times, values and tag bytes, or None when none match."""
    size = rows.shape[1]
    at = 9 + (1 + step_width if step_width else 0)  # the summary field
    tag_length = size - at - 6 - 5
    if not 0 < tag_length < 0x80:
        return None
    ok = rows[:, 0] == 0x09
    if step_width:
        ok &= rows[:, 9] == 0x10
    ok &= (rows[:, at] == 0x2A) & (rows[:, at + 1] == size - at - 2)
    ok &= (rows[:, at + 2] == 0x0A) & (rows[:, at + 3] == size - at - 4)
    ok &= (rows[:, at + 4] == 0x0A) & (rows[:, at + 5] == tag_length)
    ok &= rows[:, size - 5] == 0x15
    step = _varints(rows, 10, step_width) if step_width else np.zeros(len(rows), np.int64)
    ok &= step >= 0  # negative steps go to the parser, which reports them
    if not ok.any():
        return None
    picked = rows[ok]
    wall = np.ascontiguousarray(picked[:, 1:9]).view("<f8").reshape(-1)
    value = np.ascontiguousarray(picked[:, size - 4 :]).view("<f4").reshape(-1)
    tags = np.ascontiguousarray(picked[:, at + 6 : at + 6 + tag_length])
    return ok, step[ok], wall, value.astype(np.float64), tags


def _fast_scalars(records: Records, base: int, into: RunEvents) -> np.ndarray:
    """Decode the records in the common scalar layout into ``into``; returns the indices
    of the records left for the protobuf parser."""
    buffer = np.frombuffer(records.data, np.uint8)
    left = np.ones(len(records), bool)
    sizes, inverse = np.unique(records.lengths, return_inverse=True)
    for group, size in enumerate(sizes.tolist()):
        members = np.flatnonzero(inverse == group)
        if size < 17 or size > 200 or len(members) < 8:
            continue
        rows = gather(buffer, records.starts[members], size)
        widths = np.where(rows[:, 9] == 0x10, _varint_widths(rows, 10), 0)
        widths[(rows[:, 9] != 0x10) & (rows[:, 9] != 0x2A)] = -1
        for width in np.unique(widths).tolist():
            if width < 0:
                continue
            part = np.flatnonzero(widths == width)
            matched = _simple_scalars(rows[part], width)
            if matched is None:
                continue
            ok, step, wall, value, tags = matched
            done = members[part[ok]]
            left[done] = False
            keyed = tags.view(f"V{tags.shape[1]}").reshape(-1)
            names, which = np.unique(keyed, return_inverse=True)
            for n, name in enumerate(names):
                mine = which == n
                tag = bytes(name).decode("utf-8", "replace")
                into.scalar(tag).add(done[mine] + base, step[mine], wall[mine], value[mine])
    return np.flatnonzero(left)


# -- every other event: the protobuf --------------------------------------------------------


class _Decoder:
    """Turns parsed Events into ``RunEvents`` entries, remembering each tag's plugin."""

    def __init__(self, into: RunEvents) -> None:
        self.into = into
        self.pb = protos()
        self.plugins: dict[str, str] = {}
        self.reported: set[str] = set()
        self.experiment: Item | None = None
        self.hparam_names: list[str] = []
        self.file = ""

    def unsupported(self, tag: str, what: str) -> None:
        if tag not in self.reported:
            self.reported.add(tag)
            self.into.unsupported.append((self.file, f"tag {tag!r}: {what}"))

    def event(self, order: int, data: bytes) -> None:
        event = self.pb.event_pb2.Event.FromString(data)
        kind = event.WhichOneof("what")
        if kind == "summary":
            for value in event.summary.value:
                self.value(order, event.step, event.wall_time, value)
        elif kind in ("graph_def", "meta_graph_def", "tagged_run_metadata"):
            self.unsupported(f"<{kind}>", "graphs and run metadata are not imported")

    def value(self, order: int, step: int, wall: float, value: Any) -> None:
        tag = value.tag
        if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
            self.plugins.setdefault(tag, value.metadata.plugin_data.plugin_name)
        plugin = self.plugins.get(tag, "")
        which = value.WhichOneof("value")
        into = self.into
        if step < 0:
            self.unsupported(tag, f"negative step {step}")
        elif plugin == "hparams":
            self.hparams(order, step, wall, value.metadata.plugin_data.content)
        elif which == "simple_value":
            into.scalar(tag).add(order, step, wall, value.simple_value)
        elif which == "histo":
            self.histogram(order, tag, step, wall, value.histo)
        elif which == "image":
            self.image(order, tag, step, wall, [value.image.encoded_image_string])
        elif which == "tensor":
            self.tensor(order, tag, step, wall, plugin, value.tensor)
        elif which is not None:
            self.unsupported(tag, f"{which} summaries are not imported")

    def histogram(self, order: int, tag: str, step: int, wall: float, histo: Any) -> None:
        limits = np.asarray(histo.bucket_limit, np.float64)
        counts = np.asarray(histo.bucket, np.float64)
        first = min(histo.min, float(limits[0])) if len(limits) else histo.min
        stats = np.asarray([histo.min, histo.max, histo.num, histo.sum, histo.sum_squares])
        for suffix, array in zip(
            HISTOGRAM_SUFFIXES, (counts, np.r_[first, limits], stats), strict=True
        ):
            self.into.items.append(Item(order, "tensor", tag + suffix, step, wall, array))

    def image(self, order: int, tag: str, step: int, wall: float, pngs: list[bytes]) -> None:
        try:
            pixels = [_pixels(png) for png in pngs]
        except (OSError, ValueError) as exc:
            self.unsupported(tag, f"an image that cannot be decoded ({exc})")
            return
        self.into.items.append(Item(order, "image", tag, step, wall, pixels))

    def tensor(self, order: int, tag: str, step: int, wall: float, plugin: str, proto: Any) -> None:
        try:
            array = self.pb.tensor_util.make_ndarray(proto)
        except (TypeError, ValueError) as exc:
            self.unsupported(tag, f"a tensor that cannot be read ({exc})")
            return
        into = self.into
        if plugin == "scalars" and array.size == 1 and array.dtype.kind in "fiu":
            into.scalar(tag).add(order, step, wall, np.float64(array.reshape(-1)[0]))
        elif plugin == "text" and array.dtype.kind in "OSU":
            into.items.append(Item(order, "record", tag, step, wall, {"text": _text(array)}))
        elif plugin == "images" and array.dtype.kind in "OS" and array.ndim == 1:
            self.image(order, tag, step, wall, [bytes(b) for b in array[2:]])
        elif array.dtype.kind in "fiub" and array.ndim >= 1:
            into.items.append(Item(order, "tensor", tag, step, wall, array))
        elif array.dtype.kind in "fiub":
            into.scalar(tag).add(order, step, wall, np.float64(array))
        else:
            named = f"the {plugin!r} plugin's" if plugin else "plugin-less"
            self.unsupported(tag, f"{named} {array.dtype} tensors are not imported")

    def hparams(self, order: int, step: int, wall: float, content: bytes) -> None:
        data = self.pb.plugin_data_pb2.HParamsPluginData.FromString(content)
        part = data.WhichOneof("data")
        if part == "session_start_info":
            given = data.session_start_info.hparams
            ordered = [n for n in self.hparam_names if n in given] + sorted(
                set(given) - set(self.hparam_names)
            )
            self.into.params.update((name, _proto_value(given[name])) for name in ordered)
            return
        if self.experiment is None:
            self.experiment = Item(order, "record", HPARAMS_KEY, step, wall, {})
            self.into.items.append(self.experiment)
        record = self.experiment.payload
        if part == "experiment":
            infos = data.experiment
            self.hparam_names = [i.name for i in infos.hparam_infos]
            record["metrics"] = [m.name.tag for m in infos.metric_infos]
            domains = {
                i.name: [_proto_value(v) for v in i.domain_discrete.values]
                for i in infos.hparam_infos
                if i.HasField("domain_discrete")
            }
            if domains:
                record["domains"] = domains
        elif part == "session_end_info":
            record["status"] = self.pb.api_pb2.Status.Name(data.session_end_info.status)


def _proto_value(value: Any) -> Any:
    """A ``google.protobuf.Value`` as a Python value (numbers, strings, booleans, None)."""
    kind = value.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(value, kind)


def _text(array: np.ndarray) -> Any:
    """A text tensor as a string (one element) or nested lists of strings."""
    decoded = np.empty(array.shape, object)
    for index, item in np.ndenumerate(array):
        decoded[index] = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
    return decoded.reshape(-1)[0] if decoded.size == 1 else decoded.tolist()


def _pixels(png: bytes) -> np.ndarray:
    """An encoded image as uint8 pixels (HxW, HxWx3 or HxWx4)."""
    import io

    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(png)) as opened:
        image: PILImage.Image = opened
        if image.mode not in ("L", "RGB", "RGBA"):
            alpha = "A" in image.getbands() or "transparency" in image.info
            image = image.convert("RGBA" if alpha else "RGB")
        return np.asarray(image)


def event_files(directory: Path) -> list[Path]:
    """The event files of a directory, in the order TensorBoard reads them (by name)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and "tfevents" in p.name)


def read_run(files: list[Path], root: Path) -> RunEvents:
    """Decode the event files of one directory (damage and unsupported tags reported by
    file names relative to ``root``)."""
    into = RunEvents()
    decoder: _Decoder | None = None
    base = 0
    for path in files:
        name = path.relative_to(root).as_posix()
        records = read_records(path.read_bytes())
        into.files.append((base, name))
        if records.damage:
            into.damage[name] = records.damage
        left = _fast_scalars(records, base, into)
        if len(left):
            if decoder is None:
                decoder = _Decoder(into)
            decoder.file = name
            for i in left.tolist():
                decoder.event(base + i, records.record(i))
        into.events += len(records)
        base += len(records)
    return into
