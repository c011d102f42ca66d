"""The static report: one self-contained HTML file holding the page and every answer it needs."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage

import stepstore as ss
from stepstore.cli import main
from stepstore.ui import report

from .api_fixtures import CAPTION, Demo, client, record_alpha

NASTY_KEY = "</script><!--<script>x"


class Scripts(HTMLParser):
    """The script elements of a page (attributes and text) and every src/href value."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.links: list[str] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    demo = Demo(str(tmp_path_factory.mktemp("report") / "store"))
    record_alpha(demo)
    with ss.init("p1", name="nasty", store=demo.uri, flush_interval=0.05) as run:
        run.log({NASTY_KEY: 1.0, "loss": 2.0}, step=0)
        demo.ids["nasty"] = run.id
    return demo


@pytest.fixture(scope="module")
def written(recorded: Demo, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    path = tmp_path_factory.mktemp("out") / "report.html"
    assert report.write_report(recorded.uri, ["alpha", recorded.ids["nasty"]], path) == path
    html = path.read_text(encoding="utf-8")
    parsed = Scripts()
    parsed.feed(html)
    (data_text,) = [t for a, t in parsed.scripts if a.get("id") == "stepstore-report"]
    return html, json.loads(data_text)


def test_self_contained(written: tuple[str, dict]) -> None:
    html, _ = written
    parsed = Scripts()
    parsed.feed(html)
    assert parsed.links, "the page links nothing at all?"
    for link in parsed.links:
        assert link.startswith(("data:", "#")), link
    assert not re.search(r"\b(?:src|href)\s*=\s*[\"']?(?:https?:|//|/|\.)", html)
    assert '<link rel="stylesheet"' not in html and "<style>" in html
    # exactly the two scripts: the data, then the page's code
    assert [a.get("id") for a, _ in parsed.scripts] == ["stepstore-report", None]
    code = parsed.scripts[1][0]["src"] or ""
    shipped = (report.STATIC / "app.js").read_bytes()
    assert base64.b64decode(code.removeprefix("data:text/javascript;base64,")) == shipped


def test_script_text_in_captions_and_keys_does_not_break_the_page(
    written: tuple[str, dict], recorded: Demo
) -> None:
    html, data = written
    assert html.lower().count("</script") == 2
    assert "<!--" not in html.split('id="stepstore-report"', 1)[1].split("</script>", 1)[0]
    alpha = recorded.ids["alpha"]
    listing = data["api"][f"/api/runs/{alpha}/images?key=samples"]["images"]
    assert listing[1]["caption"] == CAPTION
    nasty = recorded.ids["nasty"]
    assert NASTY_KEY in data["api"][f"/api/runs/{nasty}"]["keys"]["scalars"]
    found = data["api"][f"/api/runs/{nasty}/scalars?key=%3C%2Fscript%3E%3C%21--%3Cscript%3Ex"]
    assert found["series"][0]["key"] == NASTY_KEY


def test_holds_every_answer_the_page_asks(written: tuple[str, dict], recorded: Demo) -> None:
    _, data = written
    alpha = recorded.ids["alpha"]
    base = f"/api/runs/{alpha}"
    expected = {
        "/api/runs",
        base,
        f"/api/runs/{recorded.ids['nasty']}",
        *(f"{base}/scalars?key={k}" for k in ("loss", "val%2Facc")),
        f"{base}/images?key=samples",
        f"{base}/records?key=eval",
        *(f"{base}/tensors?key={k}" for k in ("weights%2Ffc", "act%2Fconv", "bias")),
        *(f"{base}/tensors/histogram?key={k}" for k in ("weights%2Ffc", "act%2Fconv", "bias")),
        f"{base}/tensors/slice?key=weights%2Ffc&step=20",
        f"{base}/tensors/slice?key=act%2Fconv&step=1",
        f"{base}/tensors/slice?key=bias&step=4",
    }
    assert expected <= set(data["api"])
    assert [r["name"] for r in data["api"]["/api/runs"]["runs"]] == ["alpha", "nasty"]


def test_answers_are_the_api_answers(written: tuple[str, dict], recorded: Demo) -> None:
    _, data = written
    with client(recorded.uri) as c:
        for url, answer in data["api"].items():
            path, _, query = url.partition("?")
            if path.endswith("/scalars"):
                query += "&max_points=5000"
            live = c.get(f"{path}?{query}").json()
            if path == "/api/runs":
                live["runs"] = [
                    r for r in live["runs"] if r["id"] in {x["id"] for x in answer["runs"]}
                ]
            assert live == answer, url


def test_images_are_inlined_as_the_logged_pixels(written: tuple[str, dict], recorded: Demo) -> None:
    _, data = written
    listing = data["api"][f"/api/runs/{recorded.ids['alpha']}/images?key=samples"]["images"]
    for item, (_, _, array) in zip(listing, recorded.images, strict=True):
        blob = data["blobs"][item["url"]]
        assert blob.startswith("data:image/png;base64,")
        png = base64.b64decode(blob.split(",", 1)[1])
        assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(png))), array)


def test_missing_bundle_is_a_clear_error(
    recorded: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "STATIC", tmp_path)
    with pytest.raises(ss.StepstoreError, match=r"not built \(index.html, app.js, app.css missing"):
        report.write_report(recorded.uri, ["alpha"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_unknown_run_and_no_runs(recorded: Demo, tmp_path: Path) -> None:
    with pytest.raises(ss.NotFoundError, match="'nope'"):
        report.write_report(recorded.uri, ["alpha", "nope"], tmp_path / "r.html")
    with pytest.raises(ss.InvalidArgumentError, match="at least one run"):
        report.write_report(recorded.uri, [], tmp_path / "r.html")


def test_report_command(recorded: Demo, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.html"
    done = runner.invoke(main, ["report", "alpha", "-o", str(out), "--store", recorded.uri])
    assert done.exit_code == 0, done.output
    assert done.stdout == f"wrote {out} (1 run(s))\n"
    assert 'id="stepstore-report"' in out.read_text(encoding="utf-8")
    missing = runner.invoke(main, ["report", "nope", "-o", str(out), "--store", recorded.uri])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: no run with id or name 'nope'")
    assert "Traceback" not in missing.output
    helped = runner.invoke(main, ["report", "--help"])
    assert helped.exit_code == 0
    for option in ("RUN...", "--output", "--store"):
        assert option in helped.stdout
