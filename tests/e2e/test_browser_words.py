"""Words in the image in the real browser (headless Chromium, as tests/e2e/test_browser.py
runs it): the "words in the image" search finds the image whose text holds the words, its
card shows them, and its detail view boxes each matched word over the picture."""

from __future__ import annotations

import pytest

from clipsql.errors import OcrLanguageDataError
from tests.conftest import missing_ocr
from tests.e2e.test_browser import browser, serve  # noqa: F401 (the fixtures)
from tests.unit.test_ocr_engine import render

pytestmark = pytest.mark.e2e


def test_words_search_finds_and_boxes_the_words(serve, tmp_path):  # noqa: F811
    folder = tmp_path / "scans"
    folder.mkdir()
    render("INVOICE 2023\nTotal due 42.50", 40).save(folder / "invoice.png")
    render("STOP", 64).save(folder / "stop.png")
    render("hello world", 40).save(folder / "hello.png")
    ui = serve(folder)
    try:
        report = ui.lib.ocr("eng")
    except OcrLanguageDataError as exc:
        missing_ocr(str(exc))
    assert report.computed == 3
    page = ui.page
    page.check("#words")
    ui.search("invoice total")
    assert [path.rsplit("/", 1)[-1] for path, _ in ui.shown()] == ["invoice.png"]
    assert "INVOICE" in page.locator("#grid .card .words").inner_text()
    page.locator("#grid .card .thumb").first.click()
    page.wait_for_function("() => document.getElementById('viewer').open && "
                           "document.querySelectorAll('#viewer-boxes .word-box').length >= 2",
                           timeout=15000)
    boxes = page.eval_on_selector_all(
        "#viewer-boxes .word-box", """els => els.map(e => {
            const r = e.getBoundingClientRect();
            return [e.title, r.width, r.height];
        })""")
    words = sorted(title.lower() for title, _, _ in boxes)
    assert words == ["invoice", "total"], boxes
    assert all(w > 2 and h > 2 for _, w, h in boxes)  # drawn, not collapsed
    # the recognised text is shown with them
    assert "Total due" in page.locator("#viewer").inner_text()
    assert ui.errors == []
