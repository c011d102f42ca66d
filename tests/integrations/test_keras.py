"""stepstore.keras.Callback: keys, steps, epochs, params, summary, statuses, tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import stepstore as ss  # noqa: E402 - after the keras skip
from stepstore.integrations.adapter import PARAMS_RECORD  # noqa: E402

from ..conftest import FAST  # noqa: E402

# Keras 3.15's variables trip NumPy 2's __array__(copy=) check inside get_config()
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SAMPLES, BATCH, EPOCHS = 60, 16, 2
TRAIN = 45  # validation_split=0.25 keeps 15 samples for validation
STEPS_PER_EPOCH = -(-TRAIN // BATCH)  # 3: the last batch is short
STEPS = STEPS_PER_EPOCH * EPOCHS


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, 8)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, SAMPLES), 3)
    return x, y


def model(metrics: list[Any] | None = None) -> keras.Model:
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(4, activation="relu", name="hidden"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ],
        name="mlp",
    )
    net.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.5),
        loss="categorical_crossentropy",
        metrics=metrics if metrics is not None else ["accuracy"],
    )
    return net


def fit(net: keras.Model, callback: keras.callbacks.Callback, epochs: int = EPOCHS) -> Any:
    x, y = data()
    return net.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        validation_split=0.25,
        shuffle=False,
        callbacks=[callback],
        verbose=0,
    )


def steps(view: ss.RunView, key: str, column: str = "step") -> list[int]:
    return view.scalars(key)[column].tolist()


def test_fit_records_batches_epochs_params_and_summary(store_path: Path) -> None:
    net = model()
    callback = ss.keras.Callback(project="keras", store=store_path, **FAST)
    history = fit(net, callback)
    view = ss.open(store_path).run(callback.run.id)

    assert view.status == "finished"
    assert view.keys() == [
        "accuracy",
        "epoch/accuracy",
        "epoch/loss",
        "loss",
        "model/summary",
        "val/accuracy",
        "val/loss",
    ]
    # one point per optimizer update, at the iteration count after it: 1..N
    assert int(net.optimizer.iterations) == STEPS
    assert steps(view, "loss") == list(range(1, STEPS + 1))
    assert steps(view, "loss", "epoch") == [s // STEPS_PER_EPOCH for s in range(STEPS)]
    assert steps(view, "accuracy") == list(range(1, STEPS + 1))
    # epoch values at the step of the epoch's last batch, equal to what Keras reports
    for key in ("epoch/loss", "epoch/accuracy", "val/loss", "val/accuracy"):
        assert steps(view, key) == [STEPS_PER_EPOCH, STEPS]
        assert steps(view, key, "epoch") == [0, 1]
    assert view.scalars("val/loss")["value"].tolist() == pytest.approx(
        history.history["val_loss"], rel=1e-6
    )
    assert view.scalars("epoch/loss")["value"].tolist() == pytest.approx(
        history.history["loss"], rel=1e-6
    )

    assert view.params["fit"] == {"epochs": EPOCHS, "steps_per_epoch": STEPS_PER_EPOCH}
    optimizer = view.params["optimizer"]
    assert optimizer["class"] == "SGD"
    assert optimizer["learning_rate"] == pytest.approx(0.05)
    assert optimizer["momentum"] == pytest.approx(0.5)
    summary = view.records("model/summary")
    assert summary["step"].tolist() == [0]
    assert summary["total_params"].tolist() == [4 * 8 + 4 + 3 * 4 + 3]
    assert summary["trainable_params"].tolist() == [51]
    assert summary["layers"].tolist() == [
        [
            {"name": "hidden", "class": "Dense", "params": 36},
            {"name": "out", "class": "Dense", "params": 15},
        ]
    ]
    assert "hidden (Dense)" in summary["text"].iloc[0]


def test_log_every_n_and_epoch(store_path: Path) -> None:
    every = ss.keras.Callback(project="keras", log_every=2, store=store_path, **FAST)
    fit(model(), every)
    by_epoch = ss.keras.Callback(project="keras", log_every="epoch", store=store_path, **FAST)
    fit(model(), by_epoch)
    store = ss.open(store_path)

    assert steps(store.run(every.run.id), "loss") == [2, 4, 6]
    assert steps(store.run(every.run.id), "val/loss") == [3, 6]
    only_epochs = store.run(by_epoch.run.id)
    assert "loss" not in only_epochs.keys()
    assert steps(only_epochs, "epoch/loss") == [3, 6]


def test_vector_metric_is_a_tensor_series(store_path: Path) -> None:
    callback = ss.keras.Callback(project="keras", store=store_path, **FAST)
    fit(model([keras.metrics.F1Score(average=None)]), callback)
    view = ss.open(store_path).run(callback.run.id)

    for key, recorded in (("f1_score", list(range(1, STEPS + 1))), ("val/f1_score", [3, 6])):
        series = view.tensor(key)
        assert series.steps.tolist() == recorded
        assert series.shape == (len(recorded), 3)
    assert steps(view, "loss") == list(range(1, STEPS + 1))


def test_watch_records_weights_at_policy_steps(store_path: Path) -> None:
    net = model()
    callback = ss.keras.Callback(
        project="keras", watch=ss.every(2), log_every="epoch", store=store_path, **FAST
    )
    fit(net, callback)
    view = ss.open(store_path).run(callback.run.id)

    kernel = view.tensor("weights/mlp/hidden/kernel")
    assert kernel.steps.tolist() == [2, 4, 6]
    assert kernel.shape == (3, 8, 4)
    np.testing.assert_array_equal(kernel.at(6), keras.ops.convert_to_numpy(net.weights[0]))
    assert sorted(k for k in view.keys() if k.startswith("weights/")) == [
        "weights/mlp/hidden/bias",
        "weights/mlp/hidden/kernel",
        "weights/mlp/out/bias",
        "weights/mlp/out/kernel",
    ]


def test_given_run_is_not_finished_and_gets_params_as_a_record(new_run) -> None:
    run = new_run("keras", params={"batch_size": BATCH})
    callback = ss.keras.Callback(run)
    fit(model(), callback)
    assert run.status == "running"
    run.log({"after": 1.0})
    run.finish()
    view = ss.open(run.store).run(run.id)

    assert view.status == "finished"
    assert view.params == {"batch_size": BATCH}
    record = view.records(PARAMS_RECORD)
    assert record["step"].tolist() == [0]
    assert record["fit"].tolist() == [{"epochs": EPOCHS, "steps_per_epoch": STEPS_PER_EPOCH}]
    assert steps(view, "loss") == list(range(1, STEPS + 1))
    assert steps(view, "after") == [STEPS + 1]


def test_second_fit_resumes_the_run(store_path: Path) -> None:
    net = model()
    callback = ss.keras.Callback(project="keras", store=store_path, **FAST)
    fit(net, callback, epochs=1)
    first = callback.run
    fit(net, callback, epochs=1)
    assert callback.run.id == first.id
    view = ss.open(store_path).run(first.id)

    assert view.status == "finished"
    assert steps(view, "loss") == list(range(1, STEPS + 1))
    assert steps(view, "val/loss") == [3, 6]
    assert steps(view, "val/loss", "epoch") == [0, 0]  # each fit counts epochs from 0
    assert view.records("model/summary")["step"].tolist() == [0]


def test_exception_in_fit_records_crashed_with_the_context_manager(store_path: Path) -> None:
    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 1:
                raise RuntimeError("boom")

    net = model()
    x, y = data()
    callback = ss.keras.Callback(project="keras", store=store_path, **FAST)
    with pytest.raises(RuntimeError, match="boom"), callback:
        net.fit(x, y, batch_size=BATCH, callbacks=[callback, Boom()], verbose=0)
    view = ss.open(store_path).run(callback.run.id)

    assert view.status == "crashed"
    assert steps(view, "loss") == [1, 2]


def test_bad_arguments() -> None:
    with pytest.raises(ss.InvalidArgumentError, match="log_every=0"):
        ss.keras.Callback(project="keras", log_every=0)
    with pytest.raises(ss.InvalidArgumentError, match="log_every='step'"):
        ss.keras.Callback(project="keras", log_every="step")
    with pytest.raises(ss.InvalidArgumentError, match="watch="):
        ss.keras.Callback(project="keras", watch=ss.on_change("loss", rel=0.1))
    with pytest.raises(ss.InvalidArgumentError, match="project="):
        ss.keras.Callback()
    with pytest.raises(ss.InvalidArgumentError, match="run="):
        ss.keras.Callback(run="not a run")
