"""Device scalars are resolved by the writer, in log order, never on the training thread."""

from __future__ import annotations

import numpy as np
import pytest

import stepstore as ss
from stepstore.recording.messages import DeviceValue
from stepstore.recording.writer import merge_deferred
from stepstore.series.chunk import Columns

torch = pytest.importorskip("torch")


def test_deferred_values_merge_in_log_order():
    # journal records 1..3 and two device values logged after records 1 and 3
    seqs = np.array([1, 2, 3], dtype=np.uint64)
    ids = np.array([0, 0, 1], dtype=np.int64)
    cols = Columns(
        np.array([0, 1, 1]), np.array([5, 5, 5]), np.array([10, 20, 30]), np.array([0.5, 1.5, 2.5])
    )
    deferred = [
        DeviceValue(3, 1, 0, 5, 15e-6, torch.tensor(9.0)),
        DeviceValue(7, 0, 2, 6, 40e-6, torch.tensor(7.0)),
    ]
    key_ids, merged, resolved = merge_deferred(seqs, ids, cols, deferred)
    assert key_ids.tolist() == [0, 1, 0, 1, 0]
    assert resolved == {1: 9.0, 0: 7.0}
    assert merged.value.tolist() == [0.5, 9.0, 1.5, 2.5, 7.0]
    assert merged.step.tolist() == [0, 0, 1, 1, 2]
    assert merged.time.tolist() == [10, 15, 20, 30, 40]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scalars_are_recorded_without_sync(new_run, store_path):
    run = new_run()
    device_losses = [torch.tensor(float(i), device="cuda") * 0.5 for i in range(100)]
    for i, loss in enumerate(device_losses):
        run.log({"loss": loss, "host": float(i)})
    assert not run._writer.deferred or isinstance(run._writer.deferred[0].value, torch.Tensor)
    run.finish()
    view = ss.open(store_path).run(run.id)
    assert view.scalars("loss")["value"].tolist() == [i * 0.5 for i in range(100)]
    assert view.scalars("loss")["step"].tolist() == list(range(100))
    assert view.scalars("host")["value"].tolist() == [float(i) for i in range(100)]


def test_cpu_tensors_with_grad_are_recorded(new_run, store_path):
    run = new_run()
    weight = torch.ones(3, requires_grad=True)
    loss = (weight * 2).sum()
    run.log({"loss": loss, "half": torch.tensor(0.5, dtype=torch.float16)})
    run.finish()
    summary = ss.open(store_path).run(run.id).summary
    assert summary["loss"]["last"] == 6.0 and summary["half"]["last"] == 0.5
