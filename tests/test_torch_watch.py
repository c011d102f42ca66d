"""stepstore.integrations.torch.watch: keys, values, steps, policies, reductions, wrappers."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import stepstore as ss  # noqa: E402 - after the torch skip
from stepstore.errors import FlightBudgetError  # noqa: E402
from stepstore.flight import FlightEvent  # noqa: E402
from stepstore.integrations.torch import watch  # noqa: E402

History = list[tuple[dict[str, Any], dict[str, Any]]]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: Any) -> Any:
        return self.fc2(self.act(self.fc1(x)))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: Any) -> Any:
        return self.fc(self.flat(self.pool(self.relu(self.conv1(x)))))


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 3)

    def forward(self, x: Any) -> Any:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class Fanout(nn.Module):
    def forward(self, x: Any) -> dict[str, Any]:
        return {"double": x * 2, "note": "not a tensor", "pair": [x + 1, None]}


class DictModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.fan = Fanout()

    def forward(self, x: Any) -> Any:
        return self.fan(self.fc(x))["double"]


def inputs(model: nn.Module) -> Any:
    """A fixed batch shaped for ``model``."""
    generator = torch.Generator().manual_seed(1)
    if isinstance(model, CNN):
        return torch.randn(8, 1, 8, 8, generator=generator)
    if isinstance(model, Recurrent):
        return torch.randn(8, 4, 3, generator=generator)
    return torch.randn(8, 6, generator=generator)


def train(run: ss.Run, model: nn.Module, steps: int) -> tuple[Any, History]:
    """Run ``steps`` SGD iterations logging the loss after each; return the batch and, per
    step, the parameters its forward used and the gradients its backward produced."""
    x = inputs(model)
    y = torch.arange(len(x)) % 3
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history: History = []
    for _ in range(steps):
        used = {n: p.detach().clone() for n, p in model.named_parameters()}
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad()
        run.log({"loss": loss.item()})
        history.append((used, grads))
    return x, history


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "s"


@pytest.fixture
def run(store: Path) -> Iterator[ss.Run]:
    run = ss.init("watch", store=store, flush_interval=0.05)
    yield run
    run.finish()


def read(run: ss.Run, store: Path) -> ss.RunView:
    run.finish()
    return ss.open(store).run(run.id)


def at(view: ss.RunView, key: str, step: int) -> Any:
    return torch.from_numpy(np.asarray(view.tensor(key).at(step)))


def watched_keys(view: ss.RunView) -> set[str]:
    return {key for key in view.keys() if key != "loss"}


def param_keys(model: nn.Module) -> set[str]:
    names = [name for name, _ in model.named_parameters()]
    return {f"{kind}/{name}" for kind in ("gradients", "weights") for name in names}


# -- keys and values ---------------------------------------------------------------------


def test_mlp_values_equal_a_manual_forward_and_backward(run: ss.Run, store: Path) -> None:
    model = MLP()
    watch(run, model)
    x, history = train(run, model, 3)
    view = read(run, store)

    leaves = {"activations/fc1", "activations/act", "activations/fc2"}
    assert watched_keys(view) == leaves | param_keys(model)
    assert view.scalars("loss")["step"].tolist() == [0, 1, 2]  # the watch left run.step alone
    for step, (used, grads) in enumerate(history):
        fc1 = F.linear(x, used["fc1.weight"], used["fc1.bias"])
        fc2 = F.linear(F.relu(fc1), used["fc2.weight"], used["fc2.bias"])
        assert torch.equal(at(view, "activations/fc1", step), fc1)
        assert torch.equal(at(view, "activations/act", step), F.relu(fc1))
        assert torch.equal(at(view, "activations/fc2", step), fc2)
        for name in used:
            assert torch.equal(at(view, f"weights/{name}", step), used[name])
            assert torch.equal(at(view, f"gradients/{name}", step), grads[name])
    assert view.tensor("weights/fc1.weight").dtype == np.float32


def test_cnn_activations_equal_a_manual_forward(run: ss.Run, store: Path) -> None:
    model = CNN()
    watch(run, model, what="activations", when=ss.at(2))
    x, history = train(run, model, 3)
    view = read(run, store)

    used = history[2][0]
    conv = F.conv2d(x, used["conv1.weight"], used["conv1.bias"], padding=1)
    pooled = F.max_pool2d(F.relu(conv), 2)
    expected = {
        "conv1": conv,
        "relu": F.relu(conv),
        "pool": pooled,
        "flat": pooled.flatten(1),
        "fc": F.linear(pooled.flatten(1), used["fc.weight"], used["fc.bias"]),
    }
    assert watched_keys(view) == {f"activations/{name}" for name in expected}
    for name, value in expected.items():
        assert view.tensor(f"activations/{name}").steps.tolist() == [2]
        assert torch.equal(at(view, f"activations/{name}", 2), value)


def test_tuple_outputs_get_index_suffixes(run: ss.Run, store: Path) -> None:
    model = Recurrent()
    x = inputs(model)
    # the same autograd mode as training: LSTM kernels differ in the last bit under no_grad
    output, (h, c) = model.lstm(x)
    output, h, c = output.detach(), h.detach(), c.detach()
    watch(run, model, what="activations")
    train(run, model, 1)
    view = read(run, store)

    assert watched_keys(view) == {
        "activations/lstm/0",
        "activations/lstm/1/0",
        "activations/lstm/1/1",
        "activations/head",
    }
    assert torch.equal(at(view, "activations/lstm/0", 0), output)
    assert torch.equal(at(view, "activations/lstm/1/0", 0), h)
    assert torch.equal(at(view, "activations/lstm/1/1", 0), c)


def test_dict_outputs_get_key_suffixes_and_skip_non_tensors(run: ss.Run, store: Path) -> None:
    model = DictModel()
    watch(run, model, what="activations", layers=["fan"])
    x, history = train(run, model, 1)
    view = read(run, store)

    assert watched_keys(view) == {"activations/fan/double", "activations/fan/pair/0"}
    fc = F.linear(x, history[0][0]["fc.weight"], history[0][0]["fc.bias"])
    assert torch.equal(at(view, "activations/fan/double", 0), fc * 2)
    assert torch.equal(at(view, "activations/fan/pair/0", 0), fc + 1)


def test_a_model_without_children_records_under_the_bare_prefix(run: ss.Run, store: Path) -> None:
    model = nn.Linear(6, 3)
    watch(run, model)
    x, history = train(run, model, 1)
    view = read(run, store)

    assert watched_keys(view) == {"activations"} | param_keys(model)
    expected = F.linear(x, history[0][0]["weight"], history[0][0]["bias"])
    assert torch.equal(at(view, "activations", 0), expected)


def test_frozen_parameters_have_weights_but_no_gradients(run: ss.Run, store: Path) -> None:
    model = MLP()
    model.fc1.requires_grad_(False)
    watch(run, model, what=("gradients", "weights"))
    train(run, model, 2)
    view = read(run, store)

    assert watched_keys(view) == param_keys(model) - {
        "gradients/fc1.weight",
        "gradients/fc1.bias",
    }


def test_every_forward_at_a_recorded_step_is_recorded(run: ss.Run, store: Path) -> None:
    model = MLP()
    watch(run, model, what="activations", layers=["fc2"])
    x = inputs(model)
    with torch.no_grad():
        model(x)
        last = model(x * 2)
    run.log({"loss": 0.0})
    view = read(run, store)

    series = view.tensor("activations/fc2")
    assert series.steps.tolist() == [0, 0]
    assert torch.equal(at(view, "activations/fc2", 0), last)


# -- steps and policies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "steps", "recorded"),
    [
        (ss.every(3), 8, [0, 3, 6]),
        (ss.first(2), 5, [0, 1]),
        (ss.log_spaced(), 10, [0, 1, 2, 4, 8]),
        (ss.window(2, 4) | ss.at(6), 8, [2, 3, 6]),
    ],
)
def test_when_chooses_the_recorded_steps(
    run: ss.Run, store: Path, when: ss.Policy, steps: int, recorded: list[int]
) -> None:
    model = MLP()
    watch(run, model, when=when)
    train(run, model, steps)
    view = read(run, store)

    assert view.scalars("loss")["step"].tolist() == list(range(steps))
    for key in watched_keys(view):
        assert view.tensor(key).steps.tolist() == recorded, key


def test_a_rejecting_policy_records_nothing(run: ss.Run, store: Path) -> None:
    model = CNN()
    watch(run, model, when=ss.at(1000))
    train(run, model, 5)
    view = read(run, store)

    assert view.keys() == ["loss"]


def test_hooks_are_attached_only_for_recorded_steps(run: ss.Run) -> None:
    model = MLP()
    watch(run, model, when=ss.every(2))
    x = inputs(model)
    attached = []
    for _ in range(4):
        model(x)
        grad_hooks = model.fc1.weight._post_accumulate_grad_hooks or {}
        attached.append((len(model.fc1._forward_hooks), len(grad_hooks)))
        run.log({"loss": 0.0})

    assert attached == [(1, 1), (0, 0), (1, 1), (0, 0)]


def test_bound_run_policies_still_apply(run: ss.Run, store: Path) -> None:
    run.policy("gradients/*", ss.every(2))
    model = MLP()
    watch(run, model)
    train(run, model, 4)
    view = read(run, store)

    assert view.tensor("gradients/fc1.weight").steps.tolist() == [0, 2]
    assert view.tensor("weights/fc1.weight").steps.tolist() == [0, 1, 2, 3]


# -- reductions --------------------------------------------------------------------------


def test_stats_are_computed_from_the_activations(run: ss.Run, store: Path) -> None:
    model = MLP()
    watch(run, model, reduce="stats")
    x, history = train(run, model, 2)
    view = read(run, store)

    assert view.keys("tensor") == []
    used = history[1][0]
    fc1 = F.linear(x, used["fc1.weight"], used["fc1.bias"]).numpy().astype(np.float64)
    expected = {
        "mean": fc1.mean(),
        "std": fc1.std(),
        "min": fc1.min(),
        "max": fc1.max(),
        "norm": np.linalg.norm(fc1),
        "zeros": np.mean(fc1 == 0),
    }
    for name, value in expected.items():
        frame = view.scalars(f"activations/fc1/{name}")
        assert frame["step"].tolist() == [0, 1]
        np.testing.assert_allclose(frame["value"].iloc[1], value, rtol=1e-6, err_msg=name)
    grad = history[1][1]["fc2.bias"].numpy().astype(np.float64)
    np.testing.assert_allclose(
        view.scalars("gradients/fc2.bias/mean")["value"].iloc[1], grad.mean(), rtol=1e-6
    )


def test_histograms_count_every_element(run: ss.Run, store: Path) -> None:
    model = MLP()
    watch(run, model, what="activations", reduce="histogram")
    train(run, model, 1)
    view = read(run, store)

    counts = view.tensor("activations/fc1/histogram").at(0)
    assert counts.sum() == 8 * 16
    assert "activations/fc1" not in view.keys()


# -- layer selection ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (
            "fc*",
            {"activations/fc1", "activations/fc2"}
            | {
                f"{k}/fc{i}.{p}"
                for k in ("gradients", "weights")
                for i in (1, 2)
                for p in ("weight", "bias")
            },
        ),
        (
            re.compile(r"^fc1$"),
            {"activations/fc1", "gradients/fc1.weight", "gradients/fc1.bias"}
            | {"weights/fc1.weight", "weights/fc1.bias"},
        ),
        (["act", "fc2.bias"], {"activations/act", "gradients/fc2.bias", "weights/fc2.bias"}),
        (
            "*.weight",
            {"gradients/fc1.weight", "gradients/fc2.weight"}
            | {"weights/fc1.weight", "weights/fc2.weight"},
        ),
    ],
)
def test_layers_select_modules_and_parameters(
    run: ss.Run, store: Path, layers: Any, expected: set[str]
) -> None:
    model = MLP()
    watch(run, model, layers=layers)
    train(run, model, 1)

    assert watched_keys(read(run, store)) == expected


def test_a_glob_can_select_containers_and_the_root(run: ss.Run, store: Path) -> None:
    model = nn.Sequential(MLP(), nn.Tanh())
    watch(run, model, what="activations", layers="*")
    train(run, model, 1)

    assert watched_keys(read(run, store)) == {
        "activations",
        "activations/0",
        "activations/0.fc1",
        "activations/0.act",
        "activations/0.fc2",
        "activations/1",
    }


def test_unknown_layer_names_are_named_with_valid_ones(run: ss.Run) -> None:
    message = r"no module or parameter named 'fc3', 'conv9' in MLP; names include 'fc2', 'fc1', "
    with pytest.raises(ss.InvalidArgumentError, match=message) as caught:
        watch(run, MLP(), layers=["fc1", "fc3", "conv9"])
    assert "'fc2.weight'" in str(caught.value)


# -- argument checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"what": ("activation",)}, r"what=\('activation',\): unknown 'activation'; expected"),
        ({"what": ()}, r"what=\(\): expected one or more of 'activations', 'gradients'"),
        ({"what": 3}, r"what=3: expected one or more of"),
        ({"layers": 3}, r"layers=3: expected None, a glob string, a compiled regex or a list"),
        ({"layers": "nothing*"}, r"layers='nothing\*': selects nothing to record as "),
        ({"when": "every"}, r"when='every': expected a capture policy such as"),
        ({"when": ss.every_epoch()}, r"every_epoch\(\) needs an epoch or another key's value"),
        ({"when": ss.every(2) | ss.on_change("loss")}, r"on_change\('loss'\) needs an epoch"),
        ({"reduce": "mean"}, r"reduce='mean': expected one of None, 'raw', 'stats'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_attached(
    run: ss.Run, store: Path, kwargs: dict[str, Any], message: str
) -> None:
    model = MLP()
    with pytest.raises(ss.InvalidArgumentError, match=message):
        watch(run, model, **kwargs)
    train(run, model, 1)

    assert read(run, store).keys() == ["loss"]


def test_run_and_model_are_checked(run: ss.Run) -> None:
    with pytest.raises(ss.InvalidArgumentError, match=r"run='run': expected a stepstore Run"):
        watch("run", MLP())  # type: ignore[arg-type]
    with pytest.raises(ss.InvalidArgumentError, match=r"expected a torch.nn.Module, got dict"):
        watch(run, {})  # type: ignore[arg-type]
    with pytest.raises(ss.InvalidArgumentError, match=r"DataParallel"):
        watch(run, nn.DataParallel(MLP()))


# -- lifecycle ---------------------------------------------------------------------------


def test_remove_detaches_every_hook(run: ss.Run, store: Path) -> None:
    model = MLP()
    handle = watch(run, model)
    train(run, model, 2)
    handle.remove()
    handle.remove()
    train(run, model, 2)
    view = read(run, store)

    assert view.scalars("loss")["step"].tolist() == [0, 1, 2, 3]
    for key in watched_keys(view):
        assert view.tensor(key).steps.tolist() == [0, 1], key


def test_a_with_block_detaches_on_exit(run: ss.Run, store: Path) -> None:
    model = MLP()
    with watch(run, model, what="weights") as handle:
        assert repr(handle) == f"<Watch run={run.name} activations=0 gradients=0 weights=4>"
        train(run, model, 1)
    assert repr(handle).endswith("weights=4 removed>")
    train(run, model, 1)

    assert read(run, store).tensor("weights/fc1.bias").steps.tolist() == [0]


def test_a_finished_run_stops_recording_without_breaking_the_model(store: Path) -> None:
    run = ss.init("watch", store=store, flush_interval=0.05)
    model = MLP()
    watch(run, model)
    train(run, model, 1)
    run.finish()
    model(inputs(model)).sum().backward()  # hooks still attached, but the run is closed

    with pytest.raises(ss.RunStateError, match=r"is finished; it cannot record"):
        watch(run, model)
    view = ss.open(store).run(run.id)
    assert view.tensor("activations/fc1").steps.tolist() == [0]


# -- wrapped models ----------------------------------------------------------------------


# Dynamo reads ``.grad`` of non-leaf tensors at graph breaks and hides the warning through
# warnings.showwarning, which an "error" filter never reaches.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_compiled_models_are_watched_through_the_original_module(run: ss.Run, store: Path) -> None:
    model = MLP()
    compiled = torch.compile(model, backend="eager")
    handle = watch(run, compiled, when=ss.every(2))
    x, history = train(run, compiled, 4)
    handle.remove()
    train(run, compiled, 2)
    view = read(run, store)

    assert watched_keys(view) == {f"activations/{n}" for n in ("fc1", "act", "fc2")} | (
        param_keys(model)
    )
    for key in watched_keys(view):
        assert view.tensor(key).steps.tolist() == [0, 2], key
    used, grads = history[2]  # named by the wrapper: "_orig_mod.fc1.weight"
    fc1 = F.linear(x, used["_orig_mod.fc1.weight"], used["_orig_mod.fc1.bias"])
    assert torch.equal(at(view, "activations/fc1", 2), fc1)
    assert torch.equal(at(view, "gradients/fc2.weight", 2), grads["_orig_mod.fc2.weight"])
    assert torch.equal(at(view, "weights/fc2.weight", 2), used["_orig_mod.fc2.weight"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def process_group() -> Iterator[None]:
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
        )
    except (RuntimeError, ValueError) as exc:
        pytest.skip(f"no gloo process group: {exc}")
    yield
    dist.destroy_process_group()


@pytest.mark.usefixtures("process_group")
def test_ddp_models_are_watched_through_the_module_without_its_prefix(
    run: ss.Run, store: Path
) -> None:
    model = MLP()
    ddp = nn.parallel.DistributedDataParallel(model)
    watch(run, ddp)
    _, history = train(run, ddp, 2)
    view = read(run, store)

    assert watched_keys(view) == {f"activations/{n}" for n in ("fc1", "act", "fc2")} | (
        param_keys(model)
    )
    used, grads = history[1]
    assert torch.equal(at(view, "gradients/fc1.weight", 1), grads["module.fc1.weight"])
    assert torch.equal(at(view, "weights/fc1.bias", 1), used["module.fc1.bias"])


# -- flight recording --------------------------------------------------------------------


def events(view: ss.RunView) -> list[FlightEvent]:
    """The run's stored events as the flight recorder fired them."""
    return [FlightEvent(e.trigger, e.step, e.key, e.reason) for e in view.events()]


def train_to_nan(run: ss.Run, model: MLP, steps: int, nan_at: int) -> History:
    """``train`` with a NaN put into ``fc1.weight`` before step ``nan_at``."""
    history: History = []
    for step in range(steps):
        if step == nan_at:
            with torch.no_grad():
                model.fc1.weight[0, 0] = float("nan")
        history += train(run, model, 1)[1]
    return history


def assert_held(view: ss.RunView, key: str, steps: list[int], expected: Any) -> None:
    series = view.tensor(key)
    assert series.steps.tolist() == steps, key
    for step in steps:
        np.testing.assert_array_equal(np.asarray(series.at(step)), expected(step).numpy())


def test_flight_holds_the_last_k_steps_and_records_nothing_else(run: ss.Run, store: Path) -> None:
    model = MLP()
    handle = watch(run, model, flight=2)
    x, history = train(run, model, 5)
    assert handle.flight is not None
    event, drained = handle.flight.dump("look")
    view = read(run, store)

    assert view.keys() == ["loss"]
    assert events(view) == []  # dumped by hand, not through the run: nothing stored
    assert event == FlightEvent("dump_flight", 4, None, "look")
    assert set(drained) == {"activations/fc1", "activations/act", "activations/fc2"} | param_keys(
        model
    )
    for key, series in drained.items():
        assert series.steps.tolist() == [3, 4], key
        kind, _, name = key.partition("/")
        if kind != "activations":
            expected = [history[step][0 if kind == "weights" else 1][name] for step in (3, 4)]
            np.testing.assert_array_equal(series.values, torch.stack(expected).numpy())
    used = history[4][0]
    fc1 = F.linear(x, used["fc1.weight"], used["fc1.bias"])
    np.testing.assert_array_equal(drained["activations/fc1"].values[1], fc1.numpy())


def test_a_trigger_persists_the_window_and_the_steps_after(run: ss.Run, store: Path) -> None:
    model = MLP()
    watch(run, model, flight=2, trigger=ss.policies.on_nan("activations/fc2"), after=1)
    history = train_to_nan(run, model, 7, nan_at=3)
    view = read(run, store)

    reason = "activations/fc2 has 24 NaN of 24 values at step 3"
    assert events(view) == [FlightEvent("on_nan('activations/fc2')", 3, "activations/fc2", reason)]
    # the ring's two steps up to the firing forward, then raw through step 3 + after
    for name in ("fc1.weight", "fc2.bias"):
        assert_held(view, f"weights/{name}", [2, 3, 4], lambda s, n=name: history[s][0][n])
        # step 3's backward came after the firing: recorded raw
        assert_held(view, f"gradients/{name}", [1, 2, 3, 4], lambda s, n=name: history[s][1][n])
    assert view.tensor("activations/fc2").steps.tolist() == [2, 3, 4]
    assert np.isnan(view.tensor("activations/fc2").at(3)).all()


def test_with_when_its_steps_are_recorded_and_the_ring_holds_every_step(
    run: ss.Run, store: Path
) -> None:
    model = MLP()
    handle = watch(run, model, what="activations", when=ss.every(2), flight=2)
    train(run, model, 4)
    assert handle.flight is not None
    drained = handle.flight.ring.drain()
    view = read(run, store)

    assert view.tensor("activations/fc1").steps.tolist() == [0, 2]
    assert drained["activations/fc1"].steps.tolist() == [2, 3]
    assert events(view) == []


def test_the_flight_budget_of_parameters_is_checked_at_watch(run: ss.Run) -> None:
    model = MLP()
    message = (
        r"a flight ring of 10 steps of 8 keys needs 12\.7 KiB, over its budget of 1000 B; "
        r"largest: gradients/fc1\.weight \(384 B a step, 3\.8 KiB\), weights/fc1\.weight "
        r"\(384 B a step, 3\.8 KiB\), gradients/fc2\.weight \(192 B a step"
    )
    with pytest.raises(FlightBudgetError, match=message):
        watch(run, model, flight=10, flight_budget=1000)
    assert not model._forward_pre_hooks  # nothing attached


def test_the_flight_budget_of_activations_is_checked_at_their_first_forward(run: ss.Run) -> None:
    model = MLP()
    watch(run, model, what="activations", flight=10, flight_budget=6000)
    message = (
        r"10 steps of 2 keys needs 10\.0 KiB, over its budget of 5\.9 KiB; largest: "
        r"activations/fc1 \(512 B a step, 5\.0 KiB\), activations/act \(512 B a step"
    )
    with pytest.raises(FlightBudgetError, match=message):
        model(inputs(model))


def test_another_shape_is_not_held_with_one_warning_per_key(run: ss.Run) -> None:
    model = MLP()
    handle = watch(run, model, what="activations", layers=["fc1"], flight=3)
    x = inputs(model)
    model(x)
    run.log({"loss": 0.0})
    with pytest.warns(RuntimeWarning, match=r"expected shape \(8, 16\) torch.float32 .* got "):
        model(x[:5])
    run.log({"loss": 0.0})
    model(x[:5])  # no second warning (warnings are errors here)
    run.log({"loss": 0.0})
    model(x)
    assert handle.flight is not None
    assert handle.flight.ring.drain()["activations/fc1"].steps.tolist() == [0, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trigger": ss.on_change("loss")}, r"trigger=on_change\('loss'\) needs flight=K"),
        ({"flight": 0}, r"flight=0: expected an integer >= 1"),
        ({"flight": 2, "trigger": ss.every(2)}, r"every\(2\): a capture policy, not a trigger"),
        ({"flight": 2, "after": -1}, r"after=-1: expected an integer >= 0"),
    ],
)
def test_bad_flight_arguments_are_refused(
    run: ss.Run, kwargs: dict[str, Any], message: str
) -> None:
    model = MLP()
    with pytest.raises(ss.InvalidArgumentError, match=message):
        watch(run, model, **kwargs)
    assert not model._forward_pre_hooks
