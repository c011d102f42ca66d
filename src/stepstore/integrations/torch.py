"""PyTorch: record a model's activations, gradients and weights into a run.

::

    import stepstore as ss

    run = ss.init(project="digits")
    with ss.torch.watch(run, model, when=ss.every(100)):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            run.log({"loss": loss})

Keys, with names as ``named_modules()`` and ``named_parameters()`` give them:

- ``activations/<module name>``: the module's forward output. Items of tuple and list
  outputs add their index, items of dict outputs their key (an ``nn.LSTM`` named ``lstm``
  gives ``activations/lstm/0``, ``activations/lstm/1/0`` and ``activations/lstm/1/1``);
  items that are not tensors, and sparse tensors, are skipped. The root module (named
  ``""``) records under ``activations``.
- ``gradients/<parameter name>``: the parameter's ``.grad`` right after a backward pass
  accumulated into it, once per backward (with gradient accumulation the last one
  recorded at a step is the sum). Parameters that do not require gradients have none;
  sparse gradients (``nn.Embedding(sparse=True)``) are skipped.
- ``weights/<parameter name>``: the parameter as the root module's forward starts, that
  is the weights the step's forward uses; an optimizer update shows at the next
  recorded step.

Steps: a hook records at ``run.step``, the step the next ``run.log()`` without ``step=``
records at, read when the hook fires; the watch's own records do not move it on. In a
loop that calls ``run.log()`` once per iteration after the backward pass, as above, the
forward and backward of iteration ``i`` record at step ``i`` next to the loop's values.
Every forward of the model at a recorded step is recorded, an evaluation forward too
(``TensorSeries.at(step)`` returns the last one).

Capture policy: ``when`` is decided once per step for all of the watch's keys, against
the watch's own history (``first(n)`` counts the steps it recorded, ``log_spaced`` looks
at the last one). The root module's forward pre-hook makes that decision and attaches
the activation and gradient hooks only for a recorded step, so a rejected step costs
that one pre-hook; activations and gradients are thus recorded for forward passes that
go through the watched model (and their backward passes).
``every_epoch`` and ``on_change`` need an epoch or another key's value and are not
accepted. Policies bound with ``Run.policy()`` apply to the watch's keys as to any other.

Reductions: ``reduce="stats"`` or ``"histogram"`` binds ``Run.reduce()`` to the watched
key prefixes (``activations/*``, ...), so the run's writer thread computes them and the
training thread only pays for one copy of each tensor. The binding belongs to the run:
it covers every key under those prefixes and outlives ``remove()``.

Wrapped models: a ``torch.compile``d model is watched through ``model._orig_mod`` and a
``DistributedDataParallel`` one through ``model.module``, so names carry no ``module.``
prefix. Under ``torch.compile`` the hooks run outside the compiled code
(``torch.compiler.disable``), so they never cause recompilation, but each watched
module's output splits the compiled graph there. Under DDP a gradient is this rank's,
as accumulated before DDP averages it across ranks. ``nn.DataParallel`` runs the hooks
in several threads at once and is refused.

Flight recording: ``flight=K`` holds the watched tensors of every step's last forward and
backward in a preallocated ring of the last K steps (:class:`~stepstore.flight.FlightRecorder`,
one copy each, no I/O; ``flight_device=True`` keeps it in the tensors' device memory) and
records them raw only when ``trigger`` fires (``on_nan("loss")``, ``on_change(...)``,
``on_exception()``) or ``run.dump_flight(reason)`` is called: the run then persists the ring
as the keys' tensor series at their steps, and the ``after`` steps that follow raw. With
``flight`` and no ``when``, nothing else is recorded; with ``when`` too, its steps are
recorded as well. ``flight_budget`` bounds the ring's bytes: weights and gradients are
counted at ``watch()`` (their shapes are known), activations at their first forward; either
way ``FlightBudgetError`` names the largest keys before anything is allocated. A value of
another shape than the key's first (a smaller last batch) is not held, with one warning per
key. The ring holds no epoch: persisted steps take the run's epoch.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

from ..errors import InvalidArgumentError, RunStateError
from ..flight import FlightRecorder
from ..policies import AllOf, AnyOf, Policy, every_epoch
from ..recording.keys import KeyState
from ..recording.run import Run
from ..tensors.flight import DEFAULT_FLIGHT_BUDGET
from .requires import missing

try:
    import torch
    from torch import nn
    from torch.utils.hooks import RemovableHandle
except ImportError as exc:
    raise missing("torch", "torch", exc) from exc

__all__ = ["WHAT", "Watch", "watch"]

#: What a watch can record; each is also the prefix of its keys.
WHAT = ("activations", "gradients", "weights")


class Watch:
    """Hooks that record a model's tensors into a run; made by :func:`watch`.

    Detach them with :meth:`remove` or by using the watch as a context manager.
    """

    def __init__(self, run: Run, when: Policy | None, flight: FlightRecorder | None = None) -> None:
        self._run = run
        self._flight = flight
        self._check = None if when is None else when.compile({})
        if flight is not None and when is None:  # the ring alone: nothing raw but its dumps
            self._check = _never
        self._history = KeyState(-1, "watch", "tensor")
        self._step = -1
        self._open = False
        self._handles: list[RemovableHandle] = []
        self._attachers: list[Callable[[], RemovableHandle]] = []
        self._armed: list[RemovableHandle] = []
        self._counts = dict.fromkeys(WHAT, 0)

    def __repr__(self) -> str:
        counts = " ".join(f"{kind}={count}" for kind, count in self._counts.items())
        return f"<Watch run={self._run.name} {counts}{'' if self._handles else ' removed'}>"

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.remove()

    @property
    def flight(self) -> FlightRecorder | None:
        """The watch's flight recorder (``flight=K``), or None."""
        return self._flight

    def remove(self) -> None:
        """Detach every hook, so nothing more is recorded; calling it again does nothing."""
        for handle in (*self._handles, *self._armed):
            handle.remove()
        self._handles.clear()
        self._armed.clear()

    def _attach(
        self,
        root: nn.Module,
        activations: Mapping[str, nn.Module],
        gradients: Mapping[str, nn.Parameter],
        weights: Mapping[str, nn.Parameter],
    ) -> None:
        """Hook the model up: the root's forward pre-hook, which does the rest per step.

        A module with a forward hook takes PyTorch's slower call path and each gradient
        hook is a call into Python during backward, so the pre-hook attaches those hooks
        for a recorded step and detaches them at a rejected one, which then costs that
        one pre-hook.
        """
        for name, module in activations.items():
            key = f"activations/{name}" if name else "activations"
            hook = self._activation_hook(key)
            self._attachers.append(partial(module.register_forward_hook, hook))
        for name, param in gradients.items():
            grad_hook = self._gradient_hook(f"gradients/{name}")
            self._attachers.append(partial(param.register_post_accumulate_grad_hook, grad_hook))
        keyed = [(f"weights/{name}", param) for name, param in weights.items()]
        self._handles.append(root.register_forward_pre_hook(self._step_hook(keyed)))
        self._counts.update(
            activations=len(activations), gradients=len(gradients), weights=len(weights)
        )

    def _accept(self) -> int | None:
        """The step to record (or hold in the flight ring) at now, or ``None`` when the
        policy rejects it and there is no ring, or the run ended."""
        run = self._run
        step = run.step
        if step != self._step:
            self._step = step
            self._open = self._check is None or self._check(step, None, self._history)
            if self._open:
                self._history.last_step = step
                self._history.count += 1
        wanted = self._open or self._flight is not None
        return step if wanted and run.status == "running" else None

    def _arm(self, on: bool) -> None:
        if on and not self._armed:
            self._armed = [attach() for attach in self._attachers]
        elif not on and self._armed:
            for handle in self._armed:
                handle.remove()
            self._armed = []

    def _record(self, values: dict[str, torch.Tensor], step: int) -> None:
        flight = self._flight
        if flight is None:
            self._run.log(values, step=step, advance=False, repeat=True)
            return
        # recorded first, so a firing below leaves out of the ring what is recorded already
        raw = {k: v for k, v in values.items() if self._open or flight.recording_after(k, step)}
        if raw:
            self._run.log(raw, step=step, advance=False, repeat=True)
        now = time.time()
        event = None
        for key, value in values.items():
            event = flight.observe(step, None, now, key, value) or event
        if event is not None:
            flight.fire(event)

    def _record_output(self, key: str, output: Any, step: int) -> None:
        if isinstance(output, torch.Tensor):
            if output.layout is torch.strided:
                self._record({key: output.detach()}, step)
        elif isinstance(output, (tuple, list)):
            for index, item in enumerate(output):
                self._record_output(f"{key}/{index}", item, step)
        elif isinstance(output, Mapping):
            for name, item in output.items():
                self._record_output(f"{key}/{name}", item, step)

    # The hooks run outside compiled code: traced, their reads of ``run.step`` would
    # become guards that recompile the model at every step.

    def _step_hook(
        self, weights: list[tuple[str, nn.Parameter]]
    ) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, args: Any) -> None:
            step = self._accept()
            self._arm(step is not None)
            if step is not None and weights:
                self._record({key: param.detach() for key, param in weights}, step)

        return torch.compiler.disable(hook)

    def _activation_hook(self, key: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            step = self._accept()
            if step is not None:
                self._record_output(key, output, step)

        return torch.compiler.disable(hook)

    def _gradient_hook(self, key: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            step = self._accept()
            grad = param.grad
            if step is not None and grad is not None and grad.layout is torch.strided:
                self._record({key: grad.detach()}, step)

        return torch.compiler.disable(hook)


def watch(
    run: Run,
    model: nn.Module,
    what: str | Sequence[str] = WHAT,
    layers: str | re.Pattern[str] | Sequence[str] | None = None,
    when: Policy | None = None,
    reduce: str | None = None,
    *,
    flight: int | None = None,
    trigger: Policy | None = None,
    after: int = 0,
    flight_budget: int = DEFAULT_FLIGHT_BUDGET,
    flight_device: bool = False,
) -> Watch:
    """Record a model's activations, gradients and weights into a run from now on.

    Keys, steps and the handling of compiled and DDP models are described in the module
    documentation.

    Args:
        run: The open run to record into.
        model: The model, possibly ``torch.compile``d or wrapped in
            ``DistributedDataParallel`` (the module inside is watched).
        what: One or more of ``"activations"``, ``"gradients"`` and ``"weights"``.
        layers: Which modules and parameters: ``None`` for every module without children
            and every parameter; a glob string matched against names (``"encoder.*"``); a
            compiled regex searched in them; or a list of exact module and parameter
            names. A parameter is also selected when a module containing it is.
        when: A capture policy choosing the steps to record (``None``: every step).
        reduce: ``None`` records the tensors themselves (unless the run's own
            ``Run.reduce()`` bindings say otherwise); ``"stats"`` or ``"histogram"``
            records the run's reduction of them instead.
        flight: Hold the last ``flight`` steps in a ring, recorded when ``trigger`` fires
            (see the module documentation); None for no ring.
        trigger: When to keep the ring: ``on_nan(key)``, ``on_change(key, rel=...)``,
            ``on_exception()`` or a combination; None for ``run.dump_flight()`` only.
        after: Steps after a firing recorded raw.
        flight_budget: The most bytes the ring may hold.
        flight_device: Keep the ring in the tensors' device memory.

    Returns:
        The attached :class:`Watch`.

    Raises:
        InvalidArgumentError: An argument is not acceptable, ``layers`` names an unknown
            module or parameter, or the selection holds nothing to record. Nothing is
            attached then.
        FlightBudgetError: ``flight`` steps of the weights and gradients exceed
            ``flight_budget``; nothing is attached then.
        RunStateError: The run no longer records.
    """
    if not isinstance(run, Run):
        raise InvalidArgumentError(f"run={run!r}: expected a stepstore Run (stepstore.init)")
    if run.status != "running":
        raise RunStateError(f"run {run.name} ({run.id}) is {run.status}; it cannot record")
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(
            f"model={model!r:.60}: expected a torch.nn.Module, got {type(model).__name__}"
        )
    kinds = _check_what(what)
    _check_when(when)
    root = _unwrap(model)
    modules, params = _select(layers, root)
    activations = modules if "activations" in kinds else {}
    gradients = {n: p for n, p in params.items() if p.requires_grad and "gradients" in kinds}
    weights = params if "weights" in kinds else {}
    sizes = {"activations": len(activations), "gradients": len(gradients), "weights": len(weights)}
    if not any(sizes.values()):
        raise InvalidArgumentError(
            f"layers={layers!r}: selects nothing to record as {', '.join(kinds)} in "
            f"{type(root).__name__}; names include {_examples(_names(root), [])}"
        )
    if reduce is not None:
        patterns = [f"{kind}/*" for kind, size in sizes.items() if size]
        if "" in activations:
            patterns.append("activations")
        for pattern in patterns:
            run.reduce(pattern, reduce)
    recorder = None
    if flight is not None or trigger is not None:
        recorder = _recorder(flight, trigger, after, flight_budget, flight_device, sizes)
        recorder.reserve(
            {
                f"{kind}/{name}": param.numel() * param.element_size()
                for kind, chosen in (("gradients", gradients), ("weights", weights))
                for name, param in chosen.items()
            }
        )
    watcher = Watch(run, when, recorder)
    if recorder is not None:
        recorder.attach(run, fed=False)
    watcher._attach(root, activations, gradients, weights)
    return watcher


def _never(step: int, epoch: int | None, state: KeyState) -> bool:
    return False


def _recorder(
    flight: int | None,
    trigger: Policy | None,
    after: int,
    budget: int,
    device: bool,
    sizes: Mapping[str, int],
) -> FlightRecorder:
    """The flight recorder of the watched keys; checks the flight arguments."""
    if flight is None:
        raise InvalidArgumentError(
            f"trigger={trigger!r} needs flight=K, the number of steps to hold"
        )
    if isinstance(flight, bool) or not isinstance(flight, int) or flight < 1:
        raise InvalidArgumentError(f"flight={flight!r}: expected an integer >= 1 (steps to hold)")
    patterns = [f"{kind}/*" for kind, size in sizes.items() if size]
    if sizes["activations"]:
        patterns.append("activations")
    return FlightRecorder(patterns, flight, trigger, after, budget, device)


def _check_what(what: str | Sequence[str]) -> tuple[str, ...]:
    kinds = (what,) if isinstance(what, str) else what
    if not isinstance(kinds, (list, tuple, set, frozenset)) or not kinds:
        raise InvalidArgumentError(
            f"what={what!r}: expected one or more of {', '.join(map(repr, WHAT))}"
        )
    unknown = [kind for kind in kinds if kind not in WHAT]
    if unknown:
        raise InvalidArgumentError(
            f"what={what!r}: unknown {', '.join(map(repr, unknown))}; expected one or more "
            f"of {', '.join(map(repr, WHAT))}"
        )
    return tuple(kind for kind in WHAT if kind in kinds)


def _check_when(when: Policy | None) -> None:
    if when is None:
        return
    if not isinstance(when, Policy):
        raise InvalidArgumentError(
            f"when={when!r}: expected a capture policy such as stepstore.every(10), or None"
        )
    for part in _parts(when):
        if part.triggers or isinstance(part, every_epoch):
            raise InvalidArgumentError(
                f"when={when!r}: {part!r} needs an epoch or another key's value, which a "
                "watch does not have; expected every, at, window, first or log_spaced"
            )


def _parts(policy: Policy) -> Iterator[Policy]:
    """The simple policies a combined policy is made of."""
    if isinstance(policy, (AnyOf, AllOf)):
        yield from _parts(policy.a)
        yield from _parts(policy.b)
    else:
        yield policy


def _unwrap(model: nn.Module) -> nn.Module:
    """The module that a ``torch.compile`` or ``DistributedDataParallel`` wrapper runs."""
    while True:
        if isinstance(model, nn.DataParallel):
            raise InvalidArgumentError(
                "model is a torch.nn.DataParallel, whose replicas would run the hooks in "
                "several threads at once; watch a DistributedDataParallel model instead"
            )
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
            continue
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _select(
    layers: str | re.Pattern[str] | Sequence[str] | None, root: nn.Module
) -> tuple[dict[str, nn.Module], dict[str, nn.Parameter]]:
    """The modules and parameters ``layers`` selects, by name, in model order."""
    modules = dict(root.named_modules())
    params = dict(root.named_parameters())
    if layers is None:
        leaves = {n: m for n, m in modules.items() if next(m.children(), None) is None}
        return leaves, params
    match = _matcher(layers, root)
    return (
        {name: module for name, module in modules.items() if match(name)},
        {name: param for name, param in params.items() if any(map(match, _scopes(name)))},
    )


def _matcher(
    layers: str | re.Pattern[str] | Sequence[str], root: nn.Module
) -> Callable[[str], bool]:
    if isinstance(layers, str):
        glob = layers
        return lambda name: fnmatch.fnmatchcase(name, glob)
    if isinstance(layers, re.Pattern):
        regex = layers
        return lambda name: regex.search(name) is not None
    if isinstance(layers, (list, tuple, set, frozenset)) and all(
        isinstance(name, str) for name in layers
    ):
        known = _names(root)
        unknown = [name for name in layers if name not in known and name != ""]
        if unknown:
            raise InvalidArgumentError(
                f"layers: no module or parameter named {', '.join(map(repr, unknown))} in "
                f"{type(root).__name__}; names include {_examples(known, unknown)}"
            )
        return frozenset(layers).__contains__
    raise InvalidArgumentError(
        f"layers={layers!r}: expected None, a glob string, a compiled regex or a list of "
        "module and parameter names"
    )


def _scopes(name: str) -> list[str]:
    """A parameter's name and the names of the modules containing it, root (``""``) last."""
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(len(parts), -1, -1)]


def _names(root: nn.Module) -> list[str]:
    """Module and parameter names of a model, root excluded, in model order."""
    modules = [name for name, _ in root.named_modules() if name]
    return modules + [name for name, _ in root.named_parameters()]


def _examples(known: list[str], wrong: list[str], count: int = 8) -> str:
    """A few valid names, those closest to the ``wrong`` ones first."""
    close = [hint for name in wrong for hint in difflib.get_close_matches(name, known, n=3)]
    chosen = list(dict.fromkeys([*close, *known]))[:count]
    listed = ", ".join(map(repr, chosen)) or "none"
    return f"{listed} ({len(known)} in all)" if len(known) > len(chosen) else listed
