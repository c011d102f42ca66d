"""The exceptions stepstore raises.

Every error is a :class:`StepstoreError`; each subclass also inherits the builtin
that matches its failure kind, so ``except ValueError`` keeps working::

    StepstoreError
    ├── InvalidValueError (ValueError)      a logged value or key is not acceptable
    ├── InvalidArgumentError (ValueError)   an argument to an API call is not acceptable
    │   └── FlightBudgetError               a flight ring would hold more bytes than its budget
    ├── StepOrderError (ValueError)         a key's step went backwards
    ├── KindMismatchError (TypeError)       a key was re-used with another kind of value
    ├── RunStateError (RuntimeError)        the run is not in a state that allows the call
    ├── WriterError (RuntimeError)          the background writer failed; data stays in the journal
    ├── FilterSyntaxError (ValueError)      a filter expression does not parse
    ├── NotFoundError (KeyError)            no run, key or step by that name
    ├── StoreError (OSError)                the store cannot be opened or is damaged
    │   ├── NotAStoreError                  the path exists but is not a stepstore store
    │   └── SchemaVersionError              the store was written by a newer stepstore
    ├── StoreUnavailableError (ConnectionError)  an object store does not answer (no damage)
    ├── UnknownSchemeError (ValueError)     a store URI names a scheme no backend handles
    ├── MissingDependencyError (ImportError)  an optional package (an extra) is not installed
    └── UnsupportedError (NotImplementedError)  a drop-in API call stepstore cannot honour
"""

from __future__ import annotations


class StepstoreError(Exception):
    """Base class of every error stepstore raises."""


class InvalidValueError(StepstoreError, ValueError):
    """A logged key or value is not one stepstore can record."""


class InvalidArgumentError(StepstoreError, ValueError):
    """An argument to a stepstore call is out of range or of the wrong type."""


class FlightBudgetError(InvalidArgumentError):
    """A flight recorder's ring (steps x bytes of its keys) would exceed its byte budget;
    raised before anything is allocated, naming the largest keys."""


class StepOrderError(StepstoreError, ValueError):
    """A key was logged at a step below its last recorded step."""


class KindMismatchError(StepstoreError, TypeError):
    """A key that holds one kind of value (scalar, tensor, ...) received another."""


class RunStateError(StepstoreError, RuntimeError):
    """The run's lifecycle state does not allow the call (e.g. ``log`` after ``finish``)."""


class WriterError(StepstoreError, RuntimeError):
    """The background writer failed; points it had not written stay in the journal."""


class FilterSyntaxError(StepstoreError, ValueError):
    """A filter expression could not be parsed; the message points at the position."""

    def __init__(self, message: str, *, text: str = "", position: int = -1) -> None:
        super().__init__(message)
        self.text = text
        self.position = position


class NotFoundError(StepstoreError, KeyError):
    """No run, key or step matches what was asked for."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class StoreError(StepstoreError, OSError):
    """A store cannot be opened, read or written."""


class StoreUnavailableError(StepstoreError, ConnectionError):
    """An array store (an object store over the network) does not answer; nothing is known
    to be damaged, so writers retry and repair leaves the data alone."""


class NotAStoreError(StoreError):
    """The path exists but holds no stepstore store."""


class SchemaVersionError(StoreError):
    """The store's schema is newer than this version of stepstore understands."""


class UnknownSchemeError(StepstoreError, ValueError):
    """A store URI names a scheme that no backend handles."""


class MissingDependencyError(StepstoreError, ImportError):
    """An optional package that a feature needs is not installed; the message names the
    extra to install (``pip install 'stepstore[keras]'``)."""


class UnsupportedError(StepstoreError, NotImplementedError):
    """A call of a drop-in API (``stepstore.compat``) that stepstore cannot honour; the
    message names the call and what to use instead."""
