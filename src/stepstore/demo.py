"""The showcase run behind ``stepstore demo``: train a small CNN, record it, read it back.

A two-layer convolutional network learns scikit-learn's bundled 8x8 digits (no download) on
the CPU in a few seconds. Every iteration records ``loss`` (a 0-d torch tensor, resolved by
stepstore), ``acc``, ``lr`` (only when the StepLR schedule changes it) and ``grad_norm``
(every 10th step); every epoch records ``val/loss`` and ``val/acc`` in the same run. The run
is then read back through the query API and summarised.

``stepstore demo --blowup`` (:func:`blowup`) trains the same network with a flight recorder
on every activation and gradient, raises the learning rate at a known step so that the loss
turns NaN at the next one, and prints the window the recorder kept around it, read back from
the store.

Needs PyTorch and scikit-learn (``pip install 'stepstore[demo]'``); they are imported only
when :func:`main` runs, so this module imports without them.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import stepstore

from .backends.sqlite import DB_NAME, SQLiteBackend
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch

PROJECT = "digits-demo"
SEED = 0
WIDTH = 16
BATCH_SIZE = 32
LR = 0.01
LR_STEP_EPOCHS = 1
LR_GAMMA = 0.5
VAL_FRACTION = 0.2
GRAD_NORM_EVERY = 10
WATCH_EVERY = 10
#: The layer whose activations are kept raw (the second convolution of the Sequential).
RAW_LAYER = "2"
SAMPLES = 16
VIEW_POINTS = 2000
#: The blow-up demo: the step whose update uses ``BLOWUP_LR`` (Adam moves every weight by
#: about the learning rate, so they overflow float32 at once: the loss is NaN at the next
#: step), the steps the flight ring holds, and the steps recorded after the trigger fired.
BLOWUP_AT = 40
BLOWUP_LR = 1e20
FLIGHT_STEPS = 8
FLIGHT_AFTER = 2


def load_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits dataset as ``(x_train, y_train, x_val, y_val)`` tensors.

    Images are ``float32`` of shape ``(n, 1, 8, 8)`` scaled to ``[0, 1]``; the split is
    stratified and fixed (``random_state=SEED``).
    """
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        digits.images / 16.0,
        digits.target,
        test_size=VAL_FRACTION,
        random_state=SEED,
        stratify=digits.target,
    )

    def images(x: Any) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32).unsqueeze(1)

    def labels(y: Any) -> torch.Tensor:
        return torch.tensor(y, dtype=torch.int64)

    return images(x_train), labels(y_train), images(x_val), labels(y_val)


def build_model(width: int = WIDTH) -> torch.nn.Module:
    """The demo CNN for 1x8x8 images and 10 classes.

    Args:
        width: Channels of the first 3x3 convolution; the second has ``2 * width``. A 2x2
            max-pool and a linear layer over the 10 digit classes follow.

    Returns:
        An untrained ``torch.nn.Sequential``.
    """
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 4 * 4, 10),
    )


def main(
    store: str | os.PathLike[str] | None = None, epochs: int = 4, console: Console | None = None
) -> str:
    """Train the demo CNN on the digits, record the run, read it back and print a summary.

    Args:
        store: Store path or URI; ``None`` means ``$STEPSTORE_URI`` or ``./stepstore``.
        epochs: Passes over the training set (at least 1).
        console: A ``rich.console.Console`` to print to; a new one on standard output if None.

    Returns:
        The id of the recorded run.

    Raises:
        ModuleNotFoundError: PyTorch or scikit-learn is not installed (``name`` says which).
        InvalidArgumentError: ``epochs`` is not a positive integer.
    """
    torch = _demo_modules()
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidArgumentError(f"epochs={epochs!r}: expected an integer >= 1")
    console = Console() if console is None else console
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-for-bit the same losses on every machine and every run
    try:
        run_id, location = _train(store, epochs, console)
    finally:
        torch.set_num_threads(threads)
    _report(location, run_id, console)
    return run_id


def blowup(store: str | os.PathLike[str] | None = None, console: Console | None = None) -> str:
    """Train the demo CNN until its loss turns NaN, keeping the steps before it, and print them.

    The learning rate is raised to ``BLOWUP_LR`` at step ``BLOWUP_AT``, so the loss is NaN
    at the next step; ``on_nan("loss")`` then persists the flight ring's last
    ``FLIGHT_STEPS`` steps of every activation and gradient, and the ``FLIGHT_AFTER`` steps
    after it are recorded raw before training stops. The window is read back from the store
    and printed as a table of each tensor's root mean square per step.

    Args:
        store: Store path or URI; ``None`` means ``$STEPSTORE_URI`` or ``./stepstore``.
        console: A ``rich.console.Console`` to print to; a new one on standard output if None.

    Returns:
        The id of the recorded run.

    Raises:
        ModuleNotFoundError: PyTorch or scikit-learn is not installed (``name`` says which).
    """
    torch = _demo_modules()
    console = Console() if console is None else console
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_id, location = _train_blowup(store, console)
    finally:
        torch.set_num_threads(threads)
    _report_blowup(location, run_id, console)
    return run_id


def _demo_modules() -> Any:
    """The torch module, once PyTorch and scikit-learn are known to be installed."""
    try:
        import torch
        from sklearn.datasets import load_digits  # noqa: F401 - checked here, used by load_split
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"the stepstore demo needs PyTorch and scikit-learn ({exc}); "
            "install them with: pip install 'stepstore[demo]'",
            name=exc.name,
        ) from exc
    return torch


def _train_blowup(store: str | os.PathLike[str] | None, console: Console) -> tuple[str, str]:
    """Record the run that blows up; return its id and the store it went to."""
    import torch
    from torch import nn

    from .integrations.torch import watch
    from .policies import on_nan

    torch.manual_seed(SEED)
    x_train, y_train, _, _ = load_split()
    model = build_model(WIDTH)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(SEED)
    last = BLOWUP_AT + 1 + FLIGHT_AFTER
    params = {
        "lr": LR,
        "batch_size": BATCH_SIZE,
        "seed": SEED,
        "model": {"arch": "cnn", "width": WIDTH},
        "optimizer": {"name": "adam"},
        "blowup": {"step": BLOWUP_AT, "lr": BLOWUP_LR},
        "flight": {"steps": FLIGHT_STEPS, "after": FLIGHT_AFTER, "trigger": "on_nan('loss')"},
    }
    with stepstore.init(
        project=PROJECT,
        name=f"cnn-w{WIDTH}-blowup",
        params=params,
        tags=["demo", "blowup"],
        store=store,
    ) as run:
        watch(
            run,
            model,
            what=("activations", "gradients"),
            flight=FLIGHT_STEPS,
            trigger=on_nan("loss"),
            after=FLIGHT_AFTER,
        )
        console.print(
            f"Recording run [bold]{run.name}[/] ({run.id}) into {escape(run.store)}: the "
            f"learning rate goes from {LR:g} to {BLOWUP_LR:g} at step {BLOWUP_AT}"
        )
        step = epoch = 0
        while step <= last:
            for batch in torch.randperm(len(x_train), generator=shuffle).split(BATCH_SIZE):
                if step > last:
                    break
                if len(batch) < BATCH_SIZE:  # the ring's slots keep one batch shape
                    continue
                if step == BLOWUP_AT:
                    for group in optimizer.param_groups:
                        group["lr"] = BLOWUP_LR
                lr = optimizer.param_groups[0]["lr"]
                loss = loss_fn(model(x_train[batch]), y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                run.log({"loss": loss.detach(), "lr": lr}, step=step, epoch=epoch)
                step += 1
            epoch += 1
        return run.id, run.store


def _rms(value: Any) -> str:
    """A table cell: the root mean square of a tensor, or how it is not finite."""
    array = np.asarray(value, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        return "NaN" if np.isnan(array).any() else "inf"
    return f"{math.sqrt(float(np.mean(np.square(array)))):.2g}"


def _report_blowup(location: str, run_id: str, console: Console) -> None:
    """Read the blown-up run back and print the window the flight recorder kept."""
    with stepstore.open(location) as store:
        r = store.run(run_id)
        events = r.events()
        scalars = r.scalars(["loss", "lr"])
        keys = [k for k in r.keys() if k.startswith(("activations/", "gradients/"))]
        held = {key: r.tensor(key) for key in keys}
        steps = sorted({int(s) for series in held.values() for s in series.steps})
        cells = {
            key: {int(s): _rms(series.at(int(s))) for s in series.steps}
            for key, series in held.items()
        }
    loss = scalars[scalars["key"] == "loss"]
    bad = loss["step"][~np.isfinite(loss["value"].to_numpy())]
    if len(bad):
        console.print(
            f"The loss turned NaN at step {int(bad.iloc[0])}; on_nan('loss') kept the steps "
            "before it"
        )
    for event in events:
        on = f" on {event.key}" if event.key else ""
        line = f"event at step {event.step}: {event.trigger}{on}: {event.reason}"
        console.print(escape(line))
    table = Table(
        title=f"Run {r.name} ({r.id}): what the flight recorder kept (root mean square)",
        caption=f"kept {FLIGHT_STEPS} steps up to the trigger and {FLIGHT_AFTER} after it",
    )
    table.add_column("key", no_wrap=True)
    for step in steps:
        table.add_column(str(step), justify="right", no_wrap=True)
    by_key: dict[str, dict[int, str]] = {}
    for row in scalars.itertuples(index=False):
        if int(row.step) in steps:
            by_key.setdefault(str(row.key), {})[int(row.step)] = f"{row.value:.2g}"
    for key in ("loss", "lr"):
        table.add_row(key, *(by_key.get(key, {}).get(step, "-") for step in steps))
    for key in keys:
        table.add_row(key, *(cells[key].get(step, "-") for step in steps))
    # A column per step is wider than 80 characters: printed wider rather than cut to "0.…".
    wide = Console(
        file=console.file, width=max(console.width, 132), force_terminal=console.is_terminal
    )
    wide.print(table)


def _train(store: str | os.PathLike[str] | None, epochs: int, console: Console) -> tuple[str, str]:
    """Record one training run; return its id and the store it went to."""
    import torch
    from torch import nn

    from .integrations.torch import watch

    torch.manual_seed(SEED)
    x_train, y_train, x_val, y_val = load_split()
    model = build_model(WIDTH)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=LR_STEP_EPOCHS, gamma=LR_GAMMA)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(SEED)
    n_train = len(x_train)
    params = {
        "lr": LR,
        "batch_size": BATCH_SIZE,
        "epochs": epochs,
        "seed": SEED,
        "model": {"arch": "cnn", "width": WIDTH},
        "optimizer": {
            "name": "adam",
            "scheduler": {"name": "steplr", "step_size": LR_STEP_EPOCHS, "gamma": LR_GAMMA},
        },
        "data": {"name": "sklearn-digits", "train": n_train, "val": len(x_val)},
    }
    with stepstore.init(
        project=PROJECT,
        name=f"cnn-w{WIDTH}-lr{LR:g}",
        params=params,
        tags=["demo"],
        store=store,
        console=True,  # a live progress line and one summary line per epoch
        system=2.0,  # CPU, memory, disk and network under system/, every 2 s
    ) as run:
        run.policy("lr", stepstore.on_change("lr"))
        run.policy("grad_norm", stepstore.every(GRAD_NORM_EVERY))
        # Raw activations of one layer, and statistics of every gradient, every 10 steps.
        watch(run, model, what="activations", layers=[RAW_LAYER], when=stepstore.every(WATCH_EVERY))
        watch(run, model, what="gradients", when=stepstore.every(WATCH_EVERY), reduce="stats")
        console.print(f"Recording run [bold]{run.name}[/] ({run.id}) into {escape(run.store)}")
        step = 0
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n_train, generator=shuffle)
            for batch in order.split(BATCH_SIZE):
                lr = optimizer.param_groups[0]["lr"]
                logits = model(x_train[batch])
                loss = loss_fn(logits, y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                grad_norm = nn.utils.get_total_norm(grads)
                optimizer.step()
                acc = (logits.argmax(1) == y_train[batch]).float().mean().item()
                run.log(
                    {"loss": loss.detach(), "acc": acc, "lr": lr, "grad_norm": grad_norm},
                    step=step,
                    epoch=epoch,
                )
                step += 1
            scheduler.step()
            model.eval()
            with torch.no_grad():
                val_logits = model(x_val)
                val_loss = loss_fn(val_logits, y_val).item()
                val_acc = (val_logits.argmax(1) == y_val).float().mean().item()
            # The epoch's last step, so validation does not use up a step number of its own.
            predictions = " ".join(str(int(p)) for p in val_logits[:SAMPLES].argmax(1))
            samples = stepstore.Image(
                stepstore.image_grid(x_val[:SAMPLES], columns=8),
                caption=f"predicted: {predictions}",
            )
            run.log(
                {"val/loss": val_loss, "val/acc": val_acc, "val/samples": samples},
                step=step - 1,
                epoch=epoch,
            )
        return run.id, run.store


def _number(value: float | None) -> str:
    """A table cell for a summary value (``-`` when there is none)."""
    return "-" if value is None else f"{value:.4g}"


def _report(location: str, run_id: str, console: Console) -> None:
    """Read the run back through the query API and print what was recorded and where."""
    with stepstore.open(location) as store:
        r = store.run(run_id)
        summary = r.summary
        capture = r.capture.get("keys", {})
        validation = r.scalars("val/*")
        lr = r.scalars("lr")
        view = r.scalars("loss", max_points=VIEW_POINTS)
        activations = r.tensor(f"activations/{RAW_LAYER}")
        neuron = activations[:, 0, 5, 3, 3]
        images = r.images("val/samples")
        grad_norms = r.scalars(f"gradients/{RAW_LAYER}.weight/norm")
        backend = store.backend
        where = backend.root.resolve() if isinstance(backend, SQLiteBackend) else None

    table = Table(title=f"Run {r.name} ({r.id}): {r.status}")
    for name in ("key", "policy", "count", "skipped", "last", "min", "max"):
        table.add_column(name, justify="left" if name in ("key", "policy") else "right")
    for key, stats in summary.items():
        info = capture.get(key, {})
        table.add_row(
            key,
            info.get("policy") or "every point",
            str(stats["count"]),
            str(info.get("skipped", 0)),
            _number(stats["last"]),
            _number(stats["min"]),
            _number(stats["max"]),
        )
    console.print(table)

    by_epoch: dict[int, dict[str, float]] = {}
    for row in validation.itertuples(index=False):
        by_epoch.setdefault(int(row.epoch), {})[str(row.key)] = row.value
    val_keys = sorted({str(k) for k in validation["key"]})
    val_table = Table(title="Validation per epoch", caption='r.scalars("val/*")')
    val_table.add_column("epoch", justify="right")
    for key in val_keys:
        val_table.add_column(key, justify="right")
    for epoch, values in sorted(by_epoch.items()):
        val_table.add_row(str(epoch), *(_number(values.get(key)) for key in val_keys))
    console.print(val_table)

    changes = ", ".join(f"{v:g} at step {s}" for s, v in zip(lr["step"], lr["value"], strict=True))
    console.print(
        f'lr is recorded only when it changes (on_change("lr")): {len(lr)} of '
        f"{summary['loss']['count']} steps: {changes}"
    )
    console.print(
        f'A plot-sized view, r.scalars("loss", max_points={VIEW_POINTS}), keeps {len(view)} of '
        f"{summary['loss']['count']} points (min/max-preserving: spikes stay visible)"
    )
    console.print(
        f"Raw activations of layer {RAW_LAYER}: {activations!r}; channel 5 at pixel (3, 3) of "
        f"the first image of each recorded batch, "
        f'r.tensor("activations/{RAW_LAYER}")[:, 0, 5, 3, 3]:'
    )
    console.print(
        "  "
        + ", ".join(
            f"step {s}: {v:.3f}" for s, v in zip(activations.steps[:8], neuron[:8], strict=False)
        )
        + ", ..."
    )
    console.print(
        f"Gradient statistics (reduce='stats'): gradients/{RAW_LAYER}.weight/norm at "
        f"{len(grad_norms)} steps, last {grad_norms['value'].iloc[-1]:.4g}"
    )
    console.print(
        f"Prediction grids: {len(images)} images, one per epoch ({images[-1].array.shape} "
        f"uint8); last caption: {images[-1].caption}"
    )
    if where is None:
        console.print(f"Stored in {escape(location)}", soft_wrap=True)
        store_arg = location
    else:
        console.print(
            f"Stored in {escape(str(where))} (SQLite database {escape(str(where / DB_NAME))})",
            soft_wrap=True,
        )
        store_arg = str(where)
    flag = f"--store {shlex.quote(store_arg)}"
    program, activate = stepstore_command()
    console.print("Next:")
    for command in (
        f"{program} runs {flag}",
        f"{program} show {run_id} {flag}",
        f"{program} export {run_id} --format csv -o loss.csv {flag}",
        f"{program} ui {flag} --open",
    ):
        console.print(f"  [bold]{escape(command)}[/]", soft_wrap=True)
    if activate is not None:
        console.print(
            f"(or activate the environment once, [bold]{escape(activate)}[/], and type plain "
            "[bold]stepstore[/])",
            soft_wrap=True,
        )


def stepstore_command(
    path: str | None = None, prefix: str | None = None, cwd: Path | None = None
) -> tuple[str, str | None]:
    """How to type the ``stepstore`` command of this Python's environment.

    Args:
        path: The search path; ``$PATH`` if None.
        prefix: The environment's root; ``sys.prefix`` if None.
        cwd: The directory the commands are typed in; the current one if None.

    Returns:
        ``("stepstore", None)`` when the search path finds this environment's script (the
        environment is activated, or its scripts are on the path anyway) or when the
        environment has none; otherwise the script's path (relative to ``cwd`` when it lies
        inside it, e.g. ``.venv/bin/stepstore``) and the command that activates the
        environment.
    """
    windows = os.name == "nt"
    scripts = Path(sys.prefix if prefix is None else prefix) / ("Scripts" if windows else "bin")
    script = scripts / ("stepstore.exe" if windows else "stepstore")
    if not script.is_file():
        return "stepstore", None
    found = shutil.which("stepstore", path=os.environ.get("PATH", "") if path is None else path)
    if found is not None and Path(found).resolve() == script.resolve():
        return "stepstore", None
    here = Path.cwd() if cwd is None else cwd

    def shown(file: Path) -> str:
        return shlex.quote(str(file.relative_to(here) if file.is_relative_to(here) else file))

    activate = shown(scripts / "activate")
    return shown(script), activate if windows else f"source {activate}"


__all__ = ["blowup", "build_model", "load_split", "main", "stepstore_command"]
