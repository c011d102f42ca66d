"""stepstore.lightning.Logger: metrics, steps, epochs, hyper-parameters, statuses, ranks,
checkpoints."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

import stepstore as ss  # noqa: E402 - after the lightning skip
from stepstore.integrations.adapter import PARAMS_RECORD  # noqa: E402

from ..conftest import FAST  # noqa: E402

# Lightning's advice about data loader workers and small logging intervals, and its own use
# of an API torch 2.13 deprecates
pytestmark = [
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
    pytest.mark.filterwarnings("ignore:The '.*_dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:The number of training batches"),
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no"),
]

SAMPLES, BATCH, EPOCHS = 32, 8, 2
STEPS_PER_EPOCH = SAMPLES // BATCH
STEPS = STEPS_PER_EPOCH * EPOCHS


class Module(pl.LightningModule):
    def __init__(self, lr: float = 0.1, width: int = 8, fail_at: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(width, 3)

    def training_step(self, batch: Any, index: int) -> Any:
        if self.hparams.fail_at == self.global_step:
            raise RuntimeError("boom")
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, index: int) -> None:
        x, y = batch
        self.log("val/loss", torch.nn.functional.cross_entropy(self.net(x), y))

    def test_step(self, batch: Any, index: int) -> None:
        x, y = batch
        self.log("test/loss", torch.nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader() -> Any:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 8, generator=generator)
    y = torch.randint(0, 3, (SAMPLES,), generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)


def trainer(logger: Any, root: Path, **kwargs: Any) -> Any:
    options = {
        "max_epochs": EPOCHS,
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "accelerator": "cpu",
        "default_root_dir": root,
        **kwargs,
    }
    return pl.Trainer(logger=logger, **options)


def series(view: ss.RunView, key: str, column: str = "step") -> list[Any]:
    return view.scalars(key)[column].tolist()


def test_fit_records_metrics_hparams_and_status(store_path: Path, tmp_path: Path) -> None:
    logger = ss.lightning.Logger(project="lit", store=store_path, params={"seed": 0}, **FAST)
    fitted = trainer(logger, tmp_path)
    fitted.fit(Module(), loader(), loader())
    view = ss.open(store_path).run(logger.run.id)

    assert view.status == "finished"
    assert view.name == logger.version
    assert logger.name == "lit"
    assert view.params == {"seed": 0, "lr": 0.1, "width": 8, "fail_at": None}
    assert view.keys() == ["train/loss", "val/loss"]
    assert fitted.global_step == STEPS
    # one point per optimizer update, at Lightning's step: the updates done before it
    assert series(view, "train/loss") == list(range(STEPS))
    assert series(view, "train/loss", "epoch") == [s // STEPS_PER_EPOCH for s in range(STEPS)]
    # validation at the end of each epoch, at the count of updates done by then
    assert series(view, "val/loss") == [STEPS_PER_EPOCH - 1, STEPS - 1]
    assert series(view, "val/loss", "epoch") == [0, 1]
    assert series(view, "val/loss", "value")[-1] == pytest.approx(
        float(fitted.callback_metrics["val/loss"]), rel=1e-6
    )


def test_test_after_fit_resumes_the_run(store_path: Path, tmp_path: Path) -> None:
    logger = ss.lightning.Logger(project="lit", store=store_path, **FAST)
    fitted = trainer(logger, tmp_path)
    module = Module()
    fitted.fit(module, loader(), loader())
    first = logger.run.id
    fitted.validate(module, loader())
    fitted.test(module, loader())
    view = ss.open(store_path).run(first)

    assert logger.run.id == first
    assert view.status == "finished"
    # Lightning logs validate() and test() after fit at its count of updates, N; the
    # epoch-end validations inside fit came before the epoch's last count went up
    assert series(view, "val/loss") == [STEPS_PER_EPOCH - 1, STEPS - 1, STEPS]
    assert series(view, "test/loss") == [STEPS]
    # the same hyper-parameters again (validate, test): nothing more recorded
    assert PARAMS_RECORD not in view.keys()


def test_exception_finalizes_crashed(store_path: Path, tmp_path: Path) -> None:
    logger = ss.lightning.Logger(project="lit", store=store_path, **FAST)
    with pytest.raises(RuntimeError, match="boom"):
        trainer(logger, tmp_path).fit(Module(fail_at=5), loader())
    view = ss.open(store_path).run(logger.run.id)

    assert view.status == "crashed"
    assert series(view, "train/loss") == list(range(5))


@dataclasses.dataclass
class Options:
    depth: int
    sizes: tuple[int, ...]
    path: Path


@pytest.mark.parametrize(
    ("given", "params"),
    [
        ({"model": {"depth": 2, "act": "relu"}}, {"model": {"depth": 2, "act": "relu"}}),
        (argparse.Namespace(lr=0.5, name="x"), {"lr": 0.5, "name": "x"}),
        (
            Options(3, (4, 5), Path("/data")),
            {"depth": 3, "sizes": [4, 5], "path": "/data"},
        ),
        ({"dtype": torch.float16, "t": torch.tensor(2.5)}, {"dtype": "torch.float16", "t": 2.5}),
    ],
)
def test_log_hyperparams_shapes(store_path: Path, given: Any, params: dict[str, Any]) -> None:
    logger = ss.lightning.Logger(project="lit", store=store_path, **FAST)
    logger.log_hyperparams(given)
    logger.log_metrics({"loss": 1.0, "epoch": 0}, step=0)
    logger.finalize("success")

    assert ss.open(store_path).run(logger.run.id).params == params


def test_given_run_keeps_its_status_and_gets_hparams_as_a_record(new_run, tmp_path: Path) -> None:
    run = new_run("lit", params={"seed": 1})
    logger = ss.lightning.Logger(run)
    trainer(logger, tmp_path, max_epochs=1).fit(Module(), loader())
    assert run.status == "running"
    assert logger.version == run.name
    run.finish()
    view = ss.open(run.store).run(run.id)

    assert view.params == {"seed": 1}
    record = view.records(PARAMS_RECORD)
    assert record["step"].tolist() == [0]
    assert record[["lr", "width"]].to_dict("records") == [{"lr": 0.1, "width": 8}]
    assert series(view, "train/loss") == list(range(STEPS_PER_EPOCH))


def test_checkpoints_become_artifacts(store_path: Path, tmp_path: Path) -> None:
    logger = ss.lightning.Logger(
        project="lit", store=store_path, log_model=True, save_dir=tmp_path / "logs", **FAST
    )
    checkpoint = pl.callbacks.ModelCheckpoint(save_last=True)
    fitted = trainer(logger, tmp_path, enable_checkpointing=True, callbacks=[checkpoint])
    fitted.fit(Module(), loader(), loader())
    view = ss.open(store_path).run(logger.run.id)

    assert Path(checkpoint.dirpath) == tmp_path / "logs" / "lit" / logger.version / "checkpoints"
    assert logger.log_dir == str(tmp_path / "logs" / "lit" / logger.version)
    artifacts = view.artifacts()
    assert set(artifacts) == {"epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "last.ckpt"}
    assert view.artifact("last.ckpt") == Path(checkpoint.last_model_path).read_bytes()


@pytest.mark.parametrize(
    ("status", "recorded"),
    [
        ("success", "finished"),
        ("failed", "crashed"),
        ("finished", "finished"),
        ("killed", "killed"),
        ("odd", "incomplete"),
    ],
)
def test_finalize_status_mapping(store_path: Path, status: str, recorded: str) -> None:
    logger = ss.lightning.Logger(project="lit", store=store_path, **FAST)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize(status)
    assert ss.open(store_path).run(logger.run.id).status == recorded


def test_rank_zero_records_other_ranks_do_nothing(
    monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("STEPSTORE_RUN_ID", "lit-job")
    loggers = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        loggers[rank] = ss.lightning.Logger(project="lit", store=store_path, **FAST)
        loggers[rank].log_hyperparams({"lr": 0.1})
    for step in range(3):
        for rank, logger in loggers.items():
            logger.log_metrics({"loss": rank + step / 10, "epoch": 0}, step=step)
    for logger in loggers.values():
        logger.finalize("success")
    view = ss.open(store_path).run("lit-job")

    assert view.ranks == [0]
    assert view.params == {"lr": 0.1}
    assert series(view, "loss", "value") == [0.0, 0.1, 0.2]


def test_ranks_all_records_every_rank(monkeypatch: pytest.MonkeyPatch, store_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("STEPSTORE_RUN_ID", "lit-all")
    loggers = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        loggers[rank] = ss.lightning.Logger(project="lit", store=store_path, ranks="all", **FAST)
        loggers[rank].log_hyperparams({"lr": 0.1})
    for step in range(3):
        for rank, logger in loggers.items():
            logger.log_metrics({"loss": rank + step / 10, "epoch": 0}, step=step)
    for logger in loggers.values():
        logger.finalize("success")
    view = ss.open(store_path).run("lit-all")

    assert view.ranks == [0, 1]
    frame = view.scalars("loss", ranks="all")
    assert frame[["rank", "step", "value"]].values.tolist() == [
        [0, 0, 0.0],
        [0, 1, 0.1],
        [0, 2, 0.2],
        [1, 0, 1.0],
        [1, 1, 1.1],
        [1, 2, 1.2],
    ]
