"""The keys of a run: each key's id, kind and recorded history, and the capture policies
bound to key patterns.

The training thread looks keys up with one dict read; adding a key (from ``log()`` or a
writer thread deriving scalars) takes the registry's lock, gives the key the next id, binds
its policy and writes its name to the journal before any of its points.
"""

from __future__ import annotations

import fnmatch
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import InvalidArgumentError
from ..policies import Check, Policy
from ..values import DEFER, to_scalar
from .journal import Journal


class KeyState:
    """What a run remembers of one key: its recorded history and its capture policy."""

    __slots__ = (
        "check",
        "count",
        "id",
        "key",
        "kind",
        "last_epoch",
        "last_step",
        "policy",
        "refs",
        "rejected",
        "triggers",
        "value",
    )

    def __init__(self, key_id: int, key: str, kind: str) -> None:
        self.id = key_id
        self.key = key
        self.kind = kind
        self.last_step = -1
        self.last_epoch: int | None = None
        self.count = 0
        self.rejected = 0
        self.refs: dict[str, float] = {}
        self.check: Check | None = None
        self.policy: Policy | None = None
        self.triggers: tuple[str, ...] = ()
        #: The last value recorded (a scalar key's float or device scalar; None before any).
        self.value: Any = None


class KeyRegistry:
    """The keys of one rank of a run, and the policies that govern them."""

    def __init__(self) -> None:
        #: Key name -> its state.
        self.states: dict[str, KeyState] = {}
        #: Key id -> (name, kind); what journal records and the scalar writer index.
        self.names: list[tuple[str, str]] = []
        #: (pattern, policy) in the order bound; later bindings win.
        self.bindings: list[tuple[str, Policy]] = []
        #: The latest value of each trigger key, read by compiled policies (kept in place).
        self.latest: dict[str, float] = {}
        #: Keys whose values some bound or given policy reads.
        self.triggers: tuple[str, ...] = ()
        self._when: dict[Policy, tuple[Check, tuple[str, ...]]] = {}
        self._journal: Journal | None = None
        self._lock = threading.RLock()

    def attach(self, journal: Journal) -> None:
        """Write keys to ``journal`` from now on, those known so far first."""
        with self._lock:
            for state in self.states.values():
                journal.add_key(state.id, state.key, state.kind)
            self._journal = journal

    def add(self, key: str, kind: str) -> KeyState:
        """The state of ``key``, registered as ``kind`` with its bound policy if new (the
        kind of an existing key is left as it is: the caller checks it)."""
        with self._lock:
            state = self.states.get(key)
            if state is None:
                state = KeyState(len(self.names), key, kind)
                self._bind(state)
                if self._journal is not None:
                    self._journal.add_key(state.id, key, kind)
                self.names.append((key, kind))
                self.states[key] = state
            return state

    def bind(self, pattern: str, when: Policy) -> None:
        """Govern the keys matching ``pattern`` (known and future) by ``when``."""
        with self._lock:
            self.bindings.append((pattern, when))
            self._add_triggers(when)
            for state in self.states.values():
                self._bind(state)

    def thin(self, pattern: str, policy: Policy) -> None:
        """Add ``policy`` to the keys matching ``pattern``: known keys keep theirs too
        (both must accept), future keys get it as their binding."""
        with self._lock:
            self.bindings.append((pattern, policy))
            self._add_triggers(policy)
            for state in self.states.values():
                if fnmatch.fnmatchcase(state.key, pattern):
                    both = policy if state.policy is None else state.policy & policy
                    state.policy, state.check = both, both.compile(self.latest)

    def compile_when(self, when: Policy) -> tuple[Check, tuple[str, ...]]:
        """``log(when=...)``'s policy compiled (once per policy) and the keys it reads."""
        if not isinstance(when, Policy):
            raise InvalidArgumentError(
                f"when={when!r}: expected a capture policy such as stepstore.every(10)"
            )
        compiled = self._when.get(when)
        if compiled is None:
            self._add_triggers(when)
            compiled = (when.compile(self.latest), tuple(sorted(when.triggers)))
            self._when[when] = compiled
        return compiled

    def update_latest(self, values: Mapping[str, Any]) -> None:
        """Take the trigger values among ``values`` (device scalars are read now)."""
        for trigger in self.triggers:
            if trigger in values:
                value = to_scalar(trigger, values[trigger])
                self.latest[trigger] = float(values[trigger].item()) if value is DEFER else value

    def keep_refs(self, states: Iterable[KeyState], triggers: Sequence[str] | None) -> None:
        """Keep, in each of ``states`` just recorded, the latest values of the trigger keys
        its policy reads (``triggers``: those of the call's policy instead): what
        ``on_change`` compares the next values with."""
        latest = self.latest
        for state in states:
            for trigger in state.triggers if triggers is None else triggers:
                if trigger in latest:
                    state.refs[trigger] = latest[trigger]

    def unseen_triggers(self) -> list[tuple[Policy, str, str]]:
        """(policy, where it was given, key) for each trigger key never logged."""
        uses = [(p, f"bound to {pattern!r}") for pattern, p in self.bindings]
        uses += [(p, "given as when=") for p in self._when]
        return [
            (policy, where, key)
            for policy, where in uses
            for key in sorted(policy.triggers - self.states.keys())
        ]

    def warn_unseen(self, run: str) -> None:
        """Warn of each ``on_change(key)`` whose key was never logged in ``run``: it
        recorded nothing (at ``finish``)."""
        for policy, where, key in self.unseen_triggers():
            warnings.warn(
                f"stepstore: {run}: policy {policy!r} {where} "
                f"reads key {key!r}, which was never logged in this run, so "
                f"on_change({key!r}) recorded nothing; log {key!r} or name a key that "
                "is logged",
                RuntimeWarning,
                stacklevel=3,
            )

    def _add_triggers(self, policy: Policy) -> None:
        self.triggers = tuple(sorted(set(self.triggers) | policy.triggers))

    def _bind(self, state: KeyState) -> None:
        for pattern, policy in reversed(self.bindings):
            if fnmatch.fnmatchcase(state.key, pattern):
                state.policy = policy
                state.check = policy.compile(self.latest)
                state.triggers = tuple(sorted(policy.triggers))
                return
        state.policy, state.check, state.triggers = None, None, ()
