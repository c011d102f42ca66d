"""The error an integration raises when the framework it adapts is not installed."""

from __future__ import annotations

from ..errors import MissingDependencyError


def missing(module: str, extra: str, cause: ImportError) -> MissingDependencyError:
    """A MissingDependencyError saying that ``module`` comes with ``stepstore[extra]``."""
    return MissingDependencyError(
        f"this integration needs {module!r}, which cannot be imported ({cause}); "
        f"install it with: pip install 'stepstore[{extra}]'"
    )
