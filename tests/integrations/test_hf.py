"""stepstore.hf.Callback: a tiny randomly initialised BERT trained for a few steps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import stepstore as ss  # noqa: E402 - after the transformers skip
from stepstore.integrations.adapter import PARAMS_RECORD  # noqa: E402

from ..conftest import FAST  # noqa: E402

SAMPLES, BATCH, EPOCHS = 16, 4, 2
STEPS_PER_EPOCH = SAMPLES // BATCH
STEPS = STEPS_PER_EPOCH * EPOCHS


class Pairs(torch.utils.data.Dataset):
    """Random token ids with a binary label."""

    def __init__(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 50, (SAMPLES, 6), generator=generator)
        self.labels = torch.randint(0, 2, (SAMPLES,), generator=generator)

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.ids[index], "labels": self.labels[index]}


def model() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def trainer(callback: Any, tmp_path: Path, **kwargs: Any) -> Any:
    options = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": BATCH,
        "per_device_eval_batch_size": BATCH,
        "num_train_epochs": EPOCHS,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "eval_strategy": "epoch",
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
        **kwargs,
    }
    args = transformers.TrainingArguments(**options)
    return transformers.Trainer(
        model=model(),
        args=args,
        train_dataset=Pairs(0),
        eval_dataset=Pairs(1),
        callbacks=[callback],
    )


def series(view: ss.RunView, key: str, column: str = "step") -> list[Any]:
    return view.scalars(key)[column].tolist()


def test_train_records_logs_params_and_status(store_path: Path, tmp_path: Path) -> None:
    callback = ss.hf.Callback(project="hf", store=store_path, params={"seed": 0}, **FAST)
    hf = trainer(callback, tmp_path)
    hf.train()
    view = ss.open(store_path).run(callback.run.id)

    assert view.status == "finished"
    assert hf.state.global_step == STEPS
    assert view.keys() == [
        "eval/loss",
        "eval/runtime",
        "eval/samples_per_second",
        "eval/steps_per_second",
        "grad_norm",
        "learning_rate",
        "loss",
        "total_flos",
        "train/loss",
        "train/runtime",
        "train/samples_per_second",
        "train/steps_per_second",
    ]
    # one point per optimizer update, at the global step after it: 1..N
    for key in ("loss", "grad_norm", "learning_rate"):
        assert series(view, key) == list(range(1, STEPS + 1))
        assert series(view, key, "epoch") == [s // STEPS_PER_EPOCH for s in range(STEPS)]
    assert series(view, "eval/loss") == [STEPS_PER_EPOCH, STEPS]
    assert series(view, "eval/loss", "epoch") == [0, 1]
    assert series(view, "train/loss") == [STEPS]
    assert series(view, "train/loss", "epoch") == [EPOCHS - 1]
    history = [entry["loss"] for entry in hf.state.log_history if "loss" in entry]
    assert series(view, "loss", "value") == pytest.approx(history, rel=1e-6)

    assert view.params["seed"] == 0
    args = view.params["training_args"]
    assert (args["learning_rate"], args["num_train_epochs"], args["logging_steps"]) == (
        1e-3,
        EPOCHS,
        1,
    )
    assert args["per_device_train_batch_size"] == BATCH
    config = view.params["model_config"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["model_type"]) == (
        16,
        1,
        "bert",
    )


def test_evaluate_after_train_resumes_and_repeats_the_step(
    store_path: Path, tmp_path: Path
) -> None:
    callback = ss.hf.Callback(project="hf", store=store_path, **FAST)
    hf = trainer(callback, tmp_path, num_train_epochs=1)
    hf.train()
    first = callback.run.id
    metrics = hf.evaluate()
    view = ss.open(store_path).run(first)

    assert callback.run.id == first
    assert view.status == "running"  # resumed; finished by the next train() or at exit
    callback.finish()
    view = ss.open(store_path).run(first)
    assert view.status == "finished"
    # the epoch's evaluation and evaluate() share the last step
    assert series(view, "eval/loss") == [STEPS_PER_EPOCH, STEPS_PER_EPOCH]
    assert series(view, "eval/loss", "value")[-1] == pytest.approx(metrics["eval_loss"])
    # the model config gained problem_type in training: only that is recorded again
    record = view.records(PARAMS_RECORD)
    assert record["step"].tolist() == [STEPS_PER_EPOCH + 1]
    assert record["model_config"].tolist() == [{"problem_type": "single_label_classification"}]


def test_given_run_is_not_finished(new_run, tmp_path: Path) -> None:
    run = new_run("hf")
    callback = ss.hf.Callback(run)
    trainer(callback, tmp_path, num_train_epochs=1).train()
    assert run.status == "running"
    run.finish()
    view = ss.open(run.store).run(run.id)

    assert view.params == {}
    record = view.records(PARAMS_RECORD)
    assert record["step"].tolist() == [0]
    assert record["model_config"].iloc[0]["hidden_size"] == 16
    assert series(view, "loss") == list(range(1, STEPS_PER_EPOCH + 1))


def test_exception_records_crashed_with_the_context_manager(
    store_path: Path, tmp_path: Path
) -> None:
    class Boom(transformers.TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 3:
                raise RuntimeError("boom")

    callback = ss.hf.Callback(project="hf", store=store_path, **FAST)
    with pytest.raises(RuntimeError, match="boom"), callback:
        hf = trainer(callback, tmp_path)
        hf.add_callback(Boom())
        hf.train()
    view = ss.open(store_path).run(callback.run.id)

    assert view.status == "crashed"
    assert series(view, "loss") == [1, 2]


def test_non_numeric_log_is_skipped_with_a_warning(store_path: Path, tmp_path: Path) -> None:
    callback = ss.hf.Callback(project="hf", store=store_path, **FAST)
    hf = trainer(callback, tmp_path, num_train_epochs=1)
    with pytest.warns(RuntimeWarning, match="'note' = 'hello'"):
        hf.log({"note": "hello", "eval_accuracy": 0.5})
    callback.finish()
    view = ss.open(store_path).run(callback.run.id)
    assert view.keys() == ["eval/accuracy"]
