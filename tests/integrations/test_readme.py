"""The README's Keras, Lightning and Hugging Face examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
    pytest.mark.filterwarnings("ignore:The '.*_dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator"),
]


def snippets(text: str, name: str) -> list[str]:
    """The complete scripts among the markdown's Python blocks that use ``ss.<name>``."""
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [b for b in blocks if "import stepstore as ss" in b and f"ss.{name}." in b]


@pytest.mark.parametrize("name", ["keras", "lightning", "hf"])
def test_readme_example_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip({"hf": "transformers"}.get(name, name))
    found = snippets(README.read_text(encoding="utf-8"), name)
    assert found, f"README.md has no complete example using ss.{name}"
    monkeypatch.chdir(tmp_path)  # the examples use the default store, ./stepstore
    for code in found:
        exec(compile(code, f"README.md (ss.{name})", "exec"), {"__name__": "__readme__"})
