"""Export runs as TensorBoard event files that TensorBoard's own reader reads back exactly.

Each run becomes one event file in ``DIR/<run name>/`` (a name with ``/`` makes folders,
as TensorBoard nests runs). What each kind of key becomes:

- scalars: ``simple_value`` (float32) when every value of the key is a float32 exactly,
  else float64 tensors of the ``scalars`` plugin, so no value changes;
- ``KEY/histogram`` with ``KEY/histogram_edges`` (what an import of a TensorBoard histogram
  or a ``"histogram"`` reduction records): a HistogramProto per step, the bucket limits
  being the edges after the first; ``min, max, num, sum, sum_squares`` from
  ``KEY/histogram_stats`` where it exists, else the outer edges, the count of values and 0;
- other tensor series: tensor summaries of their dtype and shape;
- images: PNG image summaries;
- records: text summaries (the ``text`` field of a record holding only that, else the
  record as JSON); the import's ``hparams`` record and ``import/skipped`` are not texts;
- params: the ``hparams`` plugin's experiment, session start (the params, dotted) and end,
  with the metric tags and domains an imported ``hparams`` record kept.

Wall times are the stored ones (microseconds).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend, SeriesRecord, dotted_params
from ..errors import InvalidArgumentError
from ..query.views import RunView
from ..tensors.images import encode_png
from .tensorboard_events import HISTOGRAM_SUFFIXES, HPARAMS_KEY, protos
from .tensorboard_import import SKIPPED_KEY
from .tfrecord import frame


def export_tensorboard(
    views: list[RunView], backend: Backend, path: str | os.PathLike[str]
) -> tuple[int, list[Path]]:
    """Write an event file per run under the directory ``path``; returns the number of
    events written and the files."""
    pb = protos()
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise InvalidArgumentError(f"-o {os.fspath(path)!r}: a file; expected a directory")
    written, files, used = 0, [], set[str]()
    for view in views:
        folder = root / _folder(view, used)
        folder.mkdir(parents=True, exist_ok=True)
        events = list(_RunWriter(pb, view, backend).events())
        file = folder / f"events.out.tfevents.{int(view.created)}.stepstore.{view.id}"
        with open(file, "wb") as out:
            out.write(b"".join(frame(e) for e in events))
        written += len(events)
        files.append(file)
    return written, files


def _folder(view: RunView, used: set[str]) -> str:
    """The run's folder under the export directory: its name, unless that is taken or not
    a relative path inside it, then its id."""
    parts = [p for p in view.name.split("/") if p not in ("", ".", "..")]
    name = "/".join(parts) or view.id
    if name in used:
        name = f"{name}-{view.id}"
    used.add(name)
    return name


class _RunWriter:
    """The events of one run, key by key."""

    def __init__(self, pb: Any, view: RunView, backend: Backend) -> None:
        self.pb = pb
        self.view = view
        self.backend = backend
        self.series = {s.key: s for s in backend.series(view.id, 0)}

    def event(self, step: int, time: float, value: Any) -> bytes:
        summary = self.pb.summary_pb2.Summary(value=[value])
        event = self.pb.event_pb2.Event(wall_time=time, step=step, summary=summary)
        return event.SerializeToString()  # type: ignore[no-any-return]

    def metadata(self, plugin: str, content: bytes = b"") -> Any:
        data = self.pb.summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=content)
        return self.pb.summary_pb2.SummaryMetadata(plugin_data=data)

    def events(self) -> Iterator[bytes]:
        first = self.pb.event_pb2.Event(wall_time=self.view.created, file_version="brain.Event:2")
        yield first.SerializeToString()
        yield from self.hparams()
        histograms = {
            k[: -len("/histogram")]
            for k in self.series
            if k.endswith("/histogram")
            and k[: -len("/histogram")] + "/histogram_edges" in self.series
        }
        for key, series in self.series.items():
            if series.kind == "scalar":
                yield from self.scalars(key)
            elif series.kind == "tensor" and key.endswith("/histogram") and key[:-10] in histograms:
                yield from self.histograms(key[:-10])
            elif series.kind == "tensor" and not any(
                key.endswith(s) and key[: -len(s)] in histograms for s in HISTOGRAM_SUFFIXES
            ):
                yield from self.tensors(key)
            elif series.kind == "image":
                yield from self.images(key, series)
            elif series.kind == "record" and key not in (HPARAMS_KEY, SKIPPED_KEY):
                yield from self.texts(key, series)

    def scalars(self, key: str) -> Iterator[bytes]:
        columns = self.view.columns(key)
        values = columns.value
        single = values.astype(np.float32)
        exact = bool(np.all((single.astype(np.float64) == values) | np.isnan(values)))
        scalar = self.pb.summary_pb2.Summary.Value
        make = self.pb.tensor_util.make_tensor_proto
        metadata = self.metadata("scalars")
        times = (columns.time / 1e6).tolist()
        for i, (step, time) in enumerate(zip(columns.step.tolist(), times, strict=True)):
            if exact:
                value = scalar(tag=key, simple_value=float(single[i]))
            else:
                tensor = make(np.float64(values[i]))
                value = scalar(tag=key, tensor=tensor, metadata=metadata if i == 0 else None)
            yield self.event(step, time, value)

    def tensor_rows(self, key: str) -> Iterator[tuple[int, float, np.ndarray]]:
        """Each recorded step of a tensor key with its wall time and array."""
        series = self.view.tensor(key)
        _, chunks = self.backend.tensor_index(self.series[key].id)
        times: dict[int, int] = {}
        for chunk in chunks:
            steps = np.frombuffer(chunk.steps, "<i8").tolist()
            stamps = np.frombuffer(chunk.times, "<i8").tolist()
            times.update(zip(steps, stamps, strict=True))
        for step in sorted(times):
            yield step, times[step] / 1e6, series.at(step)

    def histograms(self, key: str) -> Iterator[bytes]:
        edges = {s: e for s, _, e in self.tensor_rows(key + "/histogram_edges")}
        stats = {}
        if key + "/histogram_stats" in self.series:
            stats = {s: a for s, _, a in self.tensor_rows(key + "/histogram_stats")}
        histogram = self.pb.summary_pb2.HistogramProto
        for step, time, counts in self.tensor_rows(key + "/histogram"):
            limits = np.asarray(edges[step], np.float64)
            counts = np.asarray(counts, np.float64)
            low, high, num, total, squares = (
                stats[step].tolist()
                if step in stats
                else (limits[0], limits[-1], counts.sum(), 0.0, 0.0)
            )
            histo = histogram(
                min=low,
                max=high,
                num=num,
                sum=total,
                sum_squares=squares,
                bucket_limit=limits[1:].tolist(),
                bucket=counts.tolist(),
            )
            yield self.event(step, time, self.pb.summary_pb2.Summary.Value(tag=key, histo=histo))

    def tensors(self, key: str) -> Iterator[bytes]:
        make = self.pb.tensor_util.make_tensor_proto
        for step, time, array in self.tensor_rows(key):
            value = self.pb.summary_pb2.Summary.Value(tag=key, tensor=make(np.asarray(array)))
            yield self.event(step, time, value)

    def images(self, key: str, series: SeriesRecord) -> Iterator[bytes]:
        rows = self.backend.images(series.id)
        proto = self.pb.summary_pb2.Summary.Image
        for row, logged in zip(rows, self.view.images(key), strict=True):
            pixels = logged.array
            height, width = pixels.shape[:2]
            channels = 1 if pixels.ndim == 2 else pixels.shape[2]
            image = proto(
                height=height,
                width=width,
                colorspace=channels,
                encoded_image_string=encode_png(pixels),
            )
            value = self.pb.summary_pb2.Summary.Value(tag=key, image=image)
            yield self.event(row.step, row.time / 1e6, value)

    def texts(self, key: str, series: SeriesRecord) -> Iterator[bytes]:
        metadata = self.metadata("text")
        for i, row in enumerate(self.backend.records(series.id)):
            fields = json.loads(row.data)
            text = fields["text"] if set(fields) == {"text"} else json.dumps(fields)
            strings = text if isinstance(text, list) else [text]
            array = np.asarray(strings, dtype=object)
            tensor = self.pb.tensor_util.make_tensor_proto(
                np.vectorize(lambda s: str(s).encode(), otypes=[object])(array)
            )
            value = self.pb.summary_pb2.Summary.Value(
                tag=key, tensor=tensor, metadata=metadata if i == 0 else None
            )
            yield self.event(row.step, row.time / 1e6, value)

    def hparams(self) -> Iterator[bytes]:
        params = dict(dotted_params(self.view.params))
        record: dict[str, Any] = {}
        step, time = 0, self.view.created
        if HPARAMS_KEY in self.series and self.series[HPARAMS_KEY].kind == "record":
            rows = self.backend.records(self.series[HPARAMS_KEY].id)
            if rows:
                record = json.loads(rows[0].data)
                step, time = rows[0].step, rows[0].time / 1e6
        if not params and not record:
            return
        api, data = self.pb.api_pb2, self.pb.plugin_data_pb2
        infos, start = [], data.SessionStartInfo()
        domains = record.get("domains", {})
        for name, value in params.items():
            if value is None:
                continue
            kind, field = _hparam_kind(value)
            setattr(start.hparams[name], field, _hparam_value(value))
            info = api.HParamInfo(name=name, type=api.DataType.Value(kind))
            if name in domains:
                for item in domains[name]:
                    setattr(info.domain_discrete.values.add(), _hparam_kind(item)[1], item)
            infos.append(info)
        metrics = [api.MetricInfo(name=api.MetricName(tag=t)) for t in record.get("metrics", [])]
        status = api.Status.Value(record.get("status", "STATUS_SUCCESS"))
        parts = [
            (
                "_hparams_/experiment",
                data.HParamsPluginData(
                    experiment=api.Experiment(hparam_infos=infos, metric_infos=metrics)
                ),
            ),
            ("_hparams_/session_start_info", data.HParamsPluginData(session_start_info=start)),
            (
                "_hparams_/session_end_info",
                data.HParamsPluginData(session_end_info=data.SessionEndInfo(status=status)),
            ),
        ]
        for tag, content in parts:
            metadata = self.metadata("hparams", content.SerializeToString())
            yield self.event(
                step, time, self.pb.summary_pb2.Summary.Value(tag=tag, metadata=metadata)
            )


def _hparam_kind(value: Any) -> tuple[str, str]:
    """The hparams data type and ``google.protobuf.Value`` field of a param value."""
    if isinstance(value, bool):
        return "DATA_TYPE_BOOL", "bool_value"
    if isinstance(value, (int, float)):
        return "DATA_TYPE_FLOAT64", "number_value"
    return "DATA_TYPE_STRING", "string_value"


def _hparam_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)
