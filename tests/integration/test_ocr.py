"""OCR on real PostgreSQL with the real engines (PP-OCR by default for English and Japanese,
Tesseract for Russian): images rendered here with Pillow (DejaVu, Noto CJK), loaded with the
tiny CLIP model, read by ``clipsql.ocr.ocr`` and found by their words in English, Russian and
Japanese through ``clipsql.text_in_image`` and its Python twin; a change of engine reads
every image again;
incremental and resumable runs (a ``kill -9`` mid-way), hostile queries, word boxes to
highlight, and the CLI."""

from __future__ import annotations

import json
import os
import sys

import pytest
from click.testing import CliRunner

from clipsql.errors import ImageError
from clipsql.ingest.reasons import Reason
from tests.conftest import kill_once, missing_ocr
from tests.unit.test_ocr_engine import render

TEXTS = {
    "invoice.png": ("INVOICE\nTotal due 42.50", 40),
    "schet.png": ("Счёт на оплату", 40),
    "seikyu.png": ("この請求書をご確認ください", 24),
    "stop.png": ("STOP", 64),
    "hello.jpg": ("hello world", 40),
    "blank.png": ("", 40),
}


@pytest.fixture(scope="module")
def languages():
    """Tesseract's languages (for Russian); the default engine needs none."""
    from clipsql.errors import OcrLanguageDataError
    from clipsql.ocr import OcrEngine

    try:
        with OcrEngine(engine="tesseract") as engine:
            if engine.languages != "eng+jpn+rus":
                missing_ocr(f"not every language is installed: {engine.languages}")
            return engine.languages
    except OcrLanguageDataError as exc:
        missing_ocr(str(exc))


def write_texts(folder, texts=TEXTS):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (text, size) in texts.items():
        img = render(text, size) if text else render("", 40, canvas=(300, 200))
        img.save(folder / name)
    return folder


@pytest.fixture
def texts_loaded(db, tmp_path, languages):
    folder = write_texts(tmp_path / "texts")
    db.load(folder)
    ids = dict(db.conn.execute("SELECT path, id FROM clipsql.images").fetchall())
    return folder, {os.path.basename(p): i for p, i in ids.items()}


def sql_search(db, query, k=10):
    return db.conn.execute("SELECT id, path, score FROM clipsql.text_in_image(%s, %s)",
                           (query, k)).fetchall()


def rows(db):
    return dict(db.conn.execute(
        "SELECT image_id, (engine, languages, image_sha256, created_at) FROM clipsql.ocr"
    ).fetchall())


def test_words_are_found_in_three_languages_and_runs_are_incremental(db, texts_loaded):
    from clipsql.ocr import ocr, text_in_image

    folder, ids = texts_loaded
    # Tesseract first (Russian is its language): then the default engine reads all again
    tesseract = ocr(db.conn, engine="eng+jpn+rus")
    assert tesseract.engine.startswith("tesseract 5.") and tesseract.computed == 6
    for query, name in [("счёт", "schet.png"), ("СЧЕТ оплату", "schet.png"),
                        ("invoice", "invoice.png")]:
        assert [r[0] for r in sql_search(db, query)] == [ids[name]], query
    seen = []
    first = ocr(db.conn, batch_size=4, progress=lambda done, total: seen.append((done, total)))
    assert (first.computed, first.skipped, first.failed) == (6, 0, {})
    assert seen == [(0, 6), (4, 6), (6, 6)]
    assert first.engine.startswith("PP-OCRv6 small+v5 rec ") and first.languages == "eng+jpn"
    stored = db.conn.execute(
        "SELECT o.image_id, o.text, o.confidence, o.words, o.image_sha256 = i.sha256 "
        "FROM clipsql.ocr o JOIN clipsql.images i ON i.id = o.image_id").fetchall()
    assert len(stored) == 6 and all(r[4] for r in stored)
    by_id = {r[0]: r for r in stored}
    assert by_id[ids["blank.png"]][1:4] == ("", None, [])
    assert 50 < by_id[ids["invoice.png"]][2] <= 100
    width, height = db.conn.execute("SELECT width, height FROM clipsql.images WHERE id = %s",
                                    (ids["invoice.png"],)).fetchone()
    for word in by_id[ids["invoice.png"]][3]:
        x, y, w, h = word["box"]
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height

    for query, name in [("invoice", "invoice.png"), ("INVOICE total", "invoice.png"),
                        ("請求書", "seikyu.png"), ("この", "seikyu.png"), ("確認", "seikyu.png"),
                        ("stop", "stop.png"), ("world", "hello.jpg")]:
        found = sql_search(db, query)
        assert [r[0] for r in found] == [ids[name]], (query, found)
        hits = text_in_image(db.conn, query)
        assert [(h.id, h.path, h.score) for h in hits] == [tuple(r) for r in found]
        assert hits[0].start_s is None and hits[0].score > 0
    assert sql_search(db, "invoice zebra") == [] and text_in_image(db.conn, "zebra") == []

    again = ocr(db.conn)
    assert (again.computed, again.skipped) == (0, 6)

    # a changed image is read again, and only it
    write_texts(folder, {"stop.png": ("EXIT", 64)})
    db.load(folder)
    before = rows(db)
    third = ocr(db.conn)
    assert (third.computed, third.skipped) == (1, 5)
    after = rows(db)
    assert {k for k in after if after[k] != before[k]} == {ids["stop.png"]}
    assert sql_search(db, "stop") == [] and [r[0] for r in sql_search(db, "exit")] == [ids["stop.png"]]

    # other languages: only the images they pick are read again, and again with the default
    english = ocr(db.conn, engine="eng", where="path LIKE %s", params=["%.jpg"])
    assert (english.computed, english.skipped, english.languages) == (1, 0, "eng")
    assert ocr(db.conn, engine="eng", where="path LIKE %s", params=["%.jpg"]).computed == 0
    back = ocr(db.conn)
    assert (back.computed, back.skipped) == (1, 5)
    assert ocr(db.conn, redo=True, where="path LIKE %s", params=["%.jpg"]).computed == 1

    # a stale row is not found until it is read again; a deleted image takes its row along
    db.conn.execute("UPDATE clipsql.images SET sha256 = 'changed' WHERE id = %s",
                    (ids["invoice.png"],))
    assert sql_search(db, "invoice") == [] and text_in_image(db.conn, "invoice") == []
    db.conn.execute("DELETE FROM clipsql.images WHERE id = %s", (ids["invoice.png"],))
    assert ids["invoice.png"] not in rows(db)


def test_a_filter_picks_among_the_hits(db, texts_loaded):
    from clipsql.ocr import ocr, text_in_image

    _, ids = texts_loaded
    ocr(db.conn)
    db.conn.execute("UPDATE clipsql.ocr SET text = text || ' common' ")
    every = text_in_image(db.conn, "common", k=10)
    assert sorted(h.id for h in every) == sorted(ids.values())
    assert [h.id for h in every] == [r[0] for r in sql_search(db, "common")]
    pngs = text_in_image(db.conn, "common", where="format = %s", params=["PNG"])
    assert sorted(h.id for h in pngs) == sorted(i for n, i in ids.items() if n.endswith(".png"))
    # the filter role may read clipsql.ocr (0016)
    read = text_in_image(db.conn, "common", k=3,
                         where="id IN (SELECT image_id FROM clipsql.ocr WHERE text LIKE '%INVOICE%')")
    assert [h.id for h in read] == [ids["invoice.png"]]
    assert len(text_in_image(db.conn, "common", k=2)) == 2


HOSTILE = ["'", "''", '"', "\\", "&", "|", "!", ":*", "a & b | !c", "'a':* & !'b'", "(((",
           ")", "<->", "<2>", "invoice:*", "!invoice", "invoice | stop", "in'voice",
           "\u202e\u200b\ufeff", "😀 emoji", "ｉｎｖｏｉｃｅ", "x" * 10_000, "請" * 10_000,
           "a " * 5000, "  ", "", "%s %%", "$1", "E'\\x00'", "\\x00", "\t\n\r",
           "SELECT 1; DROP TABLE clipsql.ocr; --", "𠀋𡈽 hangul 한국어", "ё" * 3000]


def test_hostile_queries_give_results_or_nothing(db, texts_loaded):
    from clipsql.ocr import matches, ocr, text_in_image

    ocr(db.conn)
    words = db.conn.execute("SELECT words FROM clipsql.ocr WHERE words <> '[]' LIMIT 1").fetchone()[0]
    for query in HOSTILE:
        found = sql_search(db, query)
        assert isinstance(found, list)
        assert [(h.id, h.path, h.score) for h in text_in_image(db.conn, query)] == \
            [tuple(r) for r in found]
        assert isinstance(matches(words, query, db.conn), list)
    # full-width letters are NFKC-folded: the invoice is found
    assert [r[1].endswith("invoice.png") for r in sql_search(db, "ｉｎｖｏｉｃｅ")] == [True]
    assert db.conn.execute("SELECT count(*) FROM clipsql.ocr").fetchone()[0] == 6
    from clipsql.errors import QueryError

    for bad, k in [("nul\x00", 10), ("fine", 0), ("fine", True)]:
        with pytest.raises(QueryError):
            text_in_image(db.conn, bad, k)
    with pytest.raises(Exception, match="k must be a positive integer"):
        sql_search(db, "invoice", 0)


def test_matches_give_the_boxes_to_highlight(db, texts_loaded):
    from clipsql.ocr import matches, ocr, ocr_for

    _, ids = texts_loaded
    ocr(db.conn)
    found = ocr_for(db.conn, [ids["invoice.png"], ids["seikyu.png"], ids["blank.png"]])
    assert set(found) == {ids["invoice.png"], ids["seikyu.png"], ids["blank.png"]}
    invoice = found[ids["invoice.png"]]["words"]
    hit = matches(invoice, "total invoice", db.conn)
    assert sorted(w["text"].lower() for w in hit) == ["invoice", "total"]
    assert all(invoice[w["index"]]["box"] == w["box"] for w in hit)
    assert matches(json.dumps(invoice), "zebra", db.conn) == []
    # Japanese: PP-OCR reads the line as one word, which holds 請求書
    seikyu = found[ids["seikyu.png"]]["words"]
    marked = "".join(w["text"] for w in matches(seikyu, "請求書", db.conn))
    assert "請求書" in marked.replace(" ", ""), seikyu
    # a CJK pair across two words (Tesseract reads 請求 and 書 apart) is marked on both
    split = [{"text": "請求", "conf": 90, "box": [0, 0, 1, 1]},
             {"text": "書", "conf": 90, "box": [1, 0, 1, 1]}]
    assert [w["index"] for w in matches(split, "請求書", db.conn)] == [0, 1]
    assert matches([], "invoice", db.conn) == []
    assert matches([{"text": 1}, "x", {"no": "text"}, {"text": "Invoice"}], "invoice",
                   db.conn) == [{"text": "Invoice", "index": 3}]


def test_an_unreadable_file_is_counted_and_tried_again(db, texts_loaded):
    from clipsql.ocr import ocr

    folder, _ = texts_loaded
    (folder / "hello.jpg").unlink()
    report = ocr(db.conn, batch_size=2, threads=2)
    gone = "vanished: the file disappeared before it could be read"
    assert report.computed == 5 and report.failed == {str(folder / "hello.jpg"): gone}
    assert ocr(db.conn).failed == {str(folder / "hello.jpg"): gone}


def test_video_moments_are_read_from_their_frame(db, texts_loaded, monkeypatch):
    import types

    from clipsql.ocr import ocr, text_in_image

    folder, ids = texts_loaded
    ocr(db.conn)
    db.conn.execute(
        "INSERT INTO clipsql.images (path, sha256, bytes, mtime, width, height, format, "
        "embedding, start_s, end_s) SELECT '/videos/clip.mp4', 'v', 1, now(), 640, 200, 'MP4', "
        "embedding, s, s + 2 FROM clipsql.images, (VALUES (0.0), (2.0), (4.0)) t(s) WHERE id = %s",
        (ids["stop.png"],))
    asked = []

    def frame_at(path, seconds, **_):
        asked.append((path, seconds))
        if seconds == 4.0:
            raise ImageError(Reason.UNREADABLE, "no frame there")  # counted, not fatal
        return render("KEYFRAME" if seconds else "OPENING", 40)

    monkeypatch.setitem(sys.modules, "clipsql.ingest.video",
                        types.SimpleNamespace(frame_at=frame_at))
    report = ocr(db.conn)
    assert (report.computed, report.skipped, report.moments_skipped) == (2, 6, 0)
    assert report.failed == {"/videos/clip.mp4": "unreadable: no frame there"}
    assert sorted(asked) == [("/videos/clip.mp4", s) for s in (0.0, 2.0, 4.0)]
    [hit] = text_in_image(db.conn, "keyframe")
    assert (hit.path, hit.start_s, hit.end_s) == ("/videos/clip.mp4", 2.0, 4.0)
    # without a video reader, moments are skipped, not failed
    db.conn.execute("DELETE FROM clipsql.ocr WHERE image_id IN "
                    "(SELECT id FROM clipsql.images WHERE start_s IS NOT NULL)")
    monkeypatch.setitem(sys.modules, "clipsql.ingest.video", None)
    report = ocr(db.conn)
    assert (report.computed, report.moments_skipped, report.failed) == (0, 3, {})


KILLED_RUN = """
import sys, time
import psycopg
from clipsql.ocr import ocr
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    # slow: each one-image batch takes at least 0.4 s
    ocr(conn, batch_size=1, threads=1,
        progress=lambda done, total: (print(done, flush=True), time.sleep(0.4)))
"""


def test_a_run_killed_mid_way_resumes_where_it_stopped(dsn, db, texts_loaded):
    from clipsql.ocr import ocr

    kill_once([KILLED_RUN, dsn], lambda: len(rows(db)), 2)
    kept = len(rows(db))
    assert 2 <= kept < 6
    report = ocr(db.conn)
    assert (report.computed, report.skipped) == (6 - kept, kept)
    assert db.conn.execute("SELECT count(*), count(DISTINCT image_id) FROM clipsql.ocr"
                           ).fetchone() == (6, 6)


def test_psycopg_and_sqlalchemy_find_the_words(dsn, db, texts_loaded):
    import psycopg
    from sqlalchemy import create_engine, select

    import clipsql.psycopg
    from clipsql.sqlalchemy import Image, text_in_image

    db.ocr()
    folder, ids = texts_loaded
    with psycopg.connect(dsn) as conn:
        [hit] = clipsql.psycopg.text_in_image(conn, "invoice")
        assert (hit.id, "INVOICE" in hit.ocr_text) == (ids["invoice.png"], True)
        assert clipsql.psycopg.text_in_image(conn, "invoice", where="format = 'JPEG'") == []
    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        found = text_in_image("stop", 5)
        with engine.connect() as conn:
            rows = conn.execute(select(Image.path, found.c.score)
                                .join(found, found.c.id == Image.id)).all()
    finally:
        engine.dispose()
    assert [os.path.basename(p) for p, _ in rows] == ["stop.png"] and rows[0][1] > 0


def test_cli_ocr(dsn, tiny_model, tmp_path, languages):
    from clipsql.cli import main

    folder = write_texts(tmp_path / "texts")
    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}

    def run(*args, code=0):
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    run("load", str(folder), "--json")
    summary = json.loads(run("ocr", "--batch-size", "4", "--json").stdout)
    assert (summary["computed"], summary["skipped"], summary["failed"]) == (6, 0, 0)
    assert summary["languages"] == "eng+jpn" and summary["engine"].startswith("PP-OCRv6 small+v5 rec ")
    text = run("ocr", "--languages", "eng", "--where", "format = %s", "--param", "JPEG").stdout
    assert "read words in 1 image with PP-OCRv6 small+v5 rec " in text and "(eng)" in text
    assert "read words in 0 images" in run("ocr", "--languages", "eng", "--where",
                                           "format = 'JPEG'").stdout
    russian = run("ocr", "--languages", "eng+rus", "--where", "format = 'JPEG'").stdout
    assert "read words in 1 image with tesseract 5." in russian and "(eng+rus)" in russian
    again = json.loads(run("ocr", "--redo", "--json").stdout)
    assert (again["computed"], again["skipped"]) == (6, 0)
    run("ocr", "--where", "format = 'JPEG'")
    missing = run("ocr", "--languages", "xyz", code=1)
    assert "apt-get install tesseract-ocr-eng" in missing.output and "Traceback" not in missing.output

    # searching the words: alone, under a filter, and fused with CLIP (weights)
    found = run("search", "invoice", "--text-in-image").stdout
    assert "invoice.png" in found and "words: INVOICE" in found and "stop.png" not in found
    hits = json.loads(run("search", "invoice total", "--text-in-image", "--json").stdout)
    assert [os.path.basename(h["path"]) for h in hits] == ["invoice.png"]
    assert "INVOICE" in hits[0]["ocr_text"] and hits[0]["score"] > 0
    assert json.loads(run("search", "invoice", "--text-in-image", "--where", "format = %s",
                          "--param", "JPEG", "--json").stdout) == []
    assert "--text-in-image takes a text QUERY alone" in run(
        "search", "invoice", "--text-in-image", "--hybrid", code=2).output
    fused = json.loads(run("search", "stop", "--hybrid", "--weight", "ocr=3",
                           "--weight", "text=0", "--json").stdout)
    assert os.path.basename(fused[0]["path"]) == "stop.png"
    assert fused[0]["ocr_rank"] == 1 and fused[0]["text_rank"] is None
    assert "ocr" in fused[0]["found_by"] and fused[0]["ocr_text"].strip() == "STOP"
    only_words = json.loads(run("search", "stop", "--hybrid", "--weight", "clip=0",
                                "--json").stdout)
    assert [os.path.basename(h["path"]) for h in only_words] == ["stop.png"]
    assert "NAME=WEIGHT" in run("search", "stop", "--hybrid", "--weight", "ocr", code=2).output
    assert "--weight is an option of --hybrid" in run(
        "search", "stop", "--weight", "ocr=2", code=2).output
