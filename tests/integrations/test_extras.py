"""Each integration names its extra when its framework cannot be imported, and
``import stepstore`` imports no framework."""

from __future__ import annotations

import pytest

from ..conftest import run_python

# integration -> (the module whose import fails, the extra to install)
CASES = {
    "torch": ("torch", "torch"),
    "keras": ("keras", "keras"),
    "lightning": ("lightning", "lightning"),
    "hf": ("transformers", "hf"),
}


@pytest.mark.parametrize(
    ("name", "module", "extra"), [(name, module, extra) for name, (module, extra) in CASES.items()]
)
def test_missing_framework_names_the_extra(name: str, module: str, extra: str) -> None:
    done = run_python(
        f"""
        import sys
        sys.modules[{module!r}] = None  # as if it were not installed
        import stepstore as ss
        try:
            ss.{name}
        except ss.MissingDependencyError as exc:
            assert isinstance(exc, ImportError) and isinstance(exc, ss.StepstoreError)
            print(exc)
        else:
            raise SystemExit("no error")
        """
    )
    assert done.returncode == 0, done.stderr
    assert f"pip install 'stepstore[{extra}]'" in done.stdout
    assert repr(module) in done.stdout


def test_import_stepstore_imports_no_framework() -> None:
    done = run_python(
        """
        import sys
        import stepstore
        print(sorted(m for m in ("keras", "lightning", "transformers", "jax", "torch")
                     if m in sys.modules))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
