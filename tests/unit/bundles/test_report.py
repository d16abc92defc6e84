"""``serve-ml bundle report``: a self-contained page whose figures are the builder's
held-out measurements, PNGs that decode, every identity and provenance field shown."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from serve_ml.bundles.loader import load_bundle
from serve_ml.cli.main import main
from tests.conftest import copy_without_evaluation

PNG = b"\x89PNG\r\n\x1a\n"


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        for key in ("src", "href"):
            if a.get(key) and not str(a[key]).startswith("data:"):
                self.external.append(str(a[key]))


def _parse(page: Path) -> _Images:
    parser = _Images()
    parser.feed(page.read_text())
    return parser


def test_a_rul_bundle_report_draws_each_gate_and_the_rul_fit(rul_root: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = rul_root / "press-02" / "7.5kW" / "1.0.0"
    assert main(["bundle", "report", str(path), "--out", str(tmp_path / "r")]) == 0
    assert "3 figures" in capsys.readouterr().out
    page = tmp_path / "r" / "report.html"
    images = _parse(page)
    assert not images.external  # self-contained
    assert {i["data-file"] for i in images.images} == {"gate-thermal.png", "gate-mechanical.png", "rul.png"}
    for img in images.images:
        data = base64.b64decode(str(img["src"]).split(",", 1)[1])
        assert data.startswith(PNG) and data == (tmp_path / "r" / str(img["data-file"])).read_bytes()
    text = page.read_text()
    bundle = load_bundle(path, rul_root)
    for needle in (bundle.digest, bundle.manifest.provenance.trained_at, "xgboost_rul", "unit: whole units",
                   f"{bundle.manifest.modalities['thermal'].threshold:.4g}", "rul_rmse"):
        assert needle in text, needle


def test_a_bundle_without_recorded_errors_still_gets_its_page(demo_root: Path, tmp_path: Path) -> None:
    bundle = copy_without_evaluation(demo_root / "press-02" / "7.5kW" / "1.0.0", tmp_path / "root")
    assert main(["bundle", "report", str(bundle), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.html").read_text()
    assert "records no held-out errors" in text and not _parse(tmp_path / "r" / "report.html").images
    assert re.search(r"<th>false_alarm_rate</th><td>0\.\d+</td>", text)


def test_report_refuses_what_is_not_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    assert main(["bundle", "report", str(tmp_path / "a" / "b" / "c")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
