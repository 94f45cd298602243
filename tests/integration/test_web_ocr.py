"""Words in the image in the web API: ``/api/search?words=`` ranks by the text OCR read (with
the same filters and paging as every search), and ``/api/images/ID/words`` gives the text
and the boxes of the matched words. Images are rendered here, loaded with the tiny model and
read by real Tesseract (``clipsql.ocr.ocr``)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import missing_ocr
from tests.unit.test_ocr_engine import render

pytestmark = pytest.mark.integration

TEXTS = {
    "invoice.png": "INVOICE\nTotal due 42.50",
    "invoice2.jpg": "Invoice number 7",
    "stop.png": "STOP",
    "hello.png": "hello world",
}
HOSTILE = ["'", '"', "\\", "&", "|", "!", ":*", "a & b | !c", "(((", "<->", "invoice:*",
           "!invoice", "in'voice", "\u202e\u200b\ufeff", "😀", "ｉｎｖｏｉｃｅ", "x" * 1000,
           "%s %%", "$1", "E'\\x00'", "SELECT 1; DROP TABLE clipsql.ocr; --", "  ", "",
           "\t\n", "請求書", "{}", "%(x)s", "{0}"]


@pytest.fixture
def served(db, dsn, tiny_model, tmp_path):
    from clipsql.errors import OcrLanguageDataError
    from clipsql.ocr import ocr
    from clipsql.web import create_app, serve_in_thread

    folder = tmp_path / "texts"
    folder.mkdir()
    for name, text in TEXTS.items():
        render(text, 40).save(folder / name)
    db.load(folder)
    try:
        report = ocr(db.conn, engine="eng")
    except OcrLanguageDataError as exc:
        missing_ocr(str(exc))
    assert report.computed == len(TEXTS) and not report.failed, report
    ids = {p.rsplit("/", 1)[-1]: i for p, i in
           db.conn.execute("SELECT path, id FROM clipsql.images").fetchall()}
    app = create_app(dsn, model=tiny_model, thumbnails_dir=tmp_path / "thumbs")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, db, ids


def names(body):
    return [h["name"] for h in body["results"]]


def test_words_search_finds_the_invoices_with_filters_and_paging(served):
    from clipsql.ocr import text_in_image

    client, db, ids = served
    r = client.get("/api/search", params={"words": "invoice"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(names(body)) == ["invoice.png", "invoice2.jpg"] and body["more"] is False
    assert [h["id"] for h in body["results"]] == [h.id for h in text_in_image(db.conn, "invoice")]
    for hit in body["results"]:
        assert "invoice" in hit["ocr_text"].lower() and hit["score"] == hit["ocr_score"] > 0
        assert hit["thumbnail_url"].startswith(f"/thumbs/{hit['id']}?") and hit["sha256"]
        assert hit["video_url"] is None and hit["width"] > 0
    # every word must be there
    assert names(client.get("/api/search", params={"words": "total invoice"}).json()) == \
        ["invoice.png"]
    assert client.get("/api/search", params={"words": "zebra"}).json()["results"] == []
    # paging walks the same ranking
    first = client.get("/api/search", params={"words": "invoice", "limit": 1}).json()
    second = client.get("/api/search", params={"words": "invoice", "limit": 1,
                                               "offset": 1}).json()
    assert first["more"] is True and second["more"] is False
    assert names(first) + names(second) == names(body)
    # the filters apply, the untrusted WHERE box through the same allowlist
    r = client.get("/api/search", params={"words": "invoice", "where": "format = 'JPEG'"})
    assert names(r.json()) == ["invoice2.jpg"]
    r = client.get("/api/search", params={"words": "invoice", "where": "path LIKE '%2.jpg'"})
    assert names(r.json()) == ["invoice2.jpg"]
    r = client.get("/api/search", params={"words": "invoice", "camera": "Canon"})
    assert r.status_code == 200 and r.json()["results"] == []
    for hostile in ["pg_sleep(1) IS NULL", "true; DELETE FROM clipsql.ocr",
                    "id IN (SELECT image_id FROM clipsql.ocr FOR UPDATE)"]:
        r = client.get("/api/search", params={"words": "invoice", "where": hostile})
        assert r.status_code == 400, (hostile, r.text)
    assert db.conn.execute("SELECT count(*) FROM clipsql.ocr").fetchone()[0] == len(TEXTS)


def test_words_go_alone(served):
    client, _, ids = served
    for extra in [{"q": "a red square"}, {"image_id": ids["stop.png"]}, {"minus": "dogs"},
                  {"hybrid": "true"}, {"within": "0.1"}, {"adaptive": "gap"},
                  {"order_by": "taken_at desc"}, {"min_score": "0.1"}]:
        r = client.get("/api/search", params={"words": "invoice", **extra})
        assert r.status_code == 400, (extra, r.text)
        assert "words" in r.json()["detail"]


def test_hostile_words_give_results_or_a_400_never_a_500(served):
    client, _, ids = served
    for words in HOSTILE:
        r = client.get("/api/search", params={"words": words})
        assert r.status_code in (200, 400), (words, r.status_code, r.text)
        r = client.get(f"/api/images/{ids['invoice.png']}/words", params={"q": words})
        assert r.status_code in (200, 400), (words, r.status_code, r.text)
    assert client.get("/api/search", params={"words": "a\x00b"}).status_code == 400
    assert client.get("/api/search", params={"words": "x" * 1001}).status_code == 422
    # the full-width query is folded like the text: the invoices are found
    got = client.get("/api/search", params={"words": "ｉｎｖｏｉｃｅ"}).json()
    assert sorted(names(got)) == ["invoice.png", "invoice2.jpg"]


def test_the_detail_gives_the_text_and_the_matched_boxes(served):
    client, db, ids = served
    r = client.get(f"/api/images/{ids['invoice.png']}/words", params={"q": "total invoice"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["read"] is True and "INVOICE" in body["text"] and body["engine"]
    assert body["languages"] == "eng"
    width, height = db.conn.execute("SELECT width, height FROM clipsql.images WHERE id = %s",
                                    (ids["invoice.png"],)).fetchone()
    assert (body["width"], body["height"]) == (width, height)
    assert sorted(w["text"].lower() for w in body["matches"]) == ["invoice", "total"]
    for word in body["matches"]:
        x, y, w, h = word["box"]
        assert 0 <= x < x + w <= width and 0 <= y < y + h <= height and w > 0 and h > 0
    # INVOICE is on the first line, Total under it
    boxes = {w["text"].lower(): w["box"] for w in body["matches"]}
    assert boxes["invoice"][1] < boxes["total"][1]
    # without q: every word read
    every = client.get(f"/api/images/{ids['invoice.png']}/words").json()["matches"]
    assert len(every) >= 4
    assert client.get(f"/api/images/{ids['stop.png']}/words",
                      params={"q": "invoice"}).json()["matches"] == []
    assert client.get("/api/images/999999/words").status_code == 404
    assert client.get("/api/images/x/words").status_code == 404
    # an image OCR has not read: read false
    db.conn.execute("DELETE FROM clipsql.ocr WHERE image_id = %s", (ids["hello.png"],))
    body = client.get(f"/api/images/{ids['hello.png']}/words").json()
    assert body == {"read": False, "text": None, "engine": None, "languages": None,
                    "confidence": None, "width": None, "height": None, "matches": []}
    # hand-written rows of any shape never break the answer
    db.conn.execute(
        "INSERT INTO clipsql.ocr (image_id, engine, languages, text, confidence, words) "
        "VALUES (%s, 'hand', 'eng', 'hello', 'NaN', %s)",
        (ids["hello.png"], '[1, "x", {"text": "hello"}, {"text": "hello", "box": [1, 2]}, '
                           '{"text": "hello", "box": ["a", 1, 2, 3]}, '
                           '{"text": "hello", "box": [1, 2, 3, 4], "conf": "high"}]'))
    body = client.get(f"/api/images/{ids['hello.png']}/words", params={"q": "hello"}).json()
    assert body["confidence"] is None
    assert body["matches"] == [{"text": "hello", "box": [1, 2, 3, 4], "conf": None}]


def test_the_openapi_description_has_the_words(served):
    client, _, _ = served
    spec = client.get("/openapi.json").json()
    search = spec["paths"]["/api/search"]["get"]
    assert any(p["name"] == "words" for p in search["parameters"])
    assert "/api/images/{image_id}/words" in spec["paths"]
