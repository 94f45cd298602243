"""Notebook thumbnails (Results._repr_html_), the web server's thumbnail cache and filters:
no database, no model."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re

import pytest
from PIL import Image

from clipsql.query.search import Hit, Results
from tests.conftest import make_image


def hit(path, score, i=1, **extra):
    now = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    fields = dict(id=i, path=str(path), score=score, sha256="0" * 64, bytes=1, mtime=now,
                  width=400, height=300, format="PNG", orientation=None, taken_at=None,
                  camera_make=None, camera_model=None, latitude=None, longitude=None, added_at=now,
                  start_s=None, end_s=None)
    fields.update(extra)
    return Hit(**fields)


def test_results_render_as_a_thumbnail_grid_with_scores(tmp_path):
    big = make_image(tmp_path / "big.png", color=(10, 200, 10), size=(400, 300))
    tall = make_image(tmp_path / "x" / "a<b>&'\".jpg", color=(200, 10, 10), size=(50, 120))
    results = Results([hit(big, 0.31234, 1, taken_at=dt.datetime(2020, 1, 2, 3, 4),
                           camera_make="Canon", camera_model="EOS"),
                       hit(tall, 0.2, 2), hit(tmp_path / "gone.jpg", 0.1, 3)])
    html = results._repr_html_()
    images = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', html)
    assert len(images) == 2
    sizes = [Image.open(io.BytesIO(base64.b64decode(b))).size for b in images]
    assert sizes == [(160, 120), (50, 120)]  # fits 160 px, never upscaled
    first = Image.open(io.BytesIO(base64.b64decode(images[0]))).convert("RGB").getpixel((80, 60))
    assert first[1] > 150 and first[0] < 60  # the green image, not some other pixels
    assert "0.312" in html and "0.200" in html and "#1" in html and "#3" in html
    assert html.index("big.png") < html.index("a&lt;b&gt;") < html.index("gone.jpg")
    assert "<b>&" not in html  # the file name is escaped, never markup
    assert "taken 2020-01-02 03:04" in html and "Canon EOS" in html
    assert "(missing file)" in html


def test_empty_results_say_so():
    assert "no results" in Results([])._repr_html_()


def test_thumbnail_cache_makes_each_thumbnail_once(tmp_path):
    from clipsql.ingest.thumbnails import ThumbnailCache

    src = make_image(tmp_path / "p.png", size=(900, 300))
    cache = ThumbnailCache(tmp_path / "thumbs")
    first = cache.get(7, "a" * 64, str(src), 320)
    assert Image.open(first).size == (320, 107)
    stamp = first.stat().st_mtime_ns
    src.unlink()  # served from the cache from now on
    assert cache.get(7, "a" * 64, str(src), 320) == first and first.stat().st_mtime_ns == stamp
    make_image(src, color=(0, 0, 255), size=(300, 900))  # edited: new hash, new thumbnail
    second = cache.get(7, "b" * 64, str(src), 320)
    assert second != first and not first.exists() and Image.open(second).size == (107, 320)
    assert cache.get(8, "c" * 64, str(tmp_path / "missing.png"), 320) is None
    with pytest.raises(ValueError):
        cache.file_for(7, "../../etc/passwd", 320)


def test_thumbnails_of_transparent_and_broken_images(tmp_path):
    from clipsql.ingest.thumbnails import render

    clear = tmp_path / "clear.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(clear)
    assert Image.open(io.BytesIO(render(str(clear)))).getpixel((20, 20)) == (255, 255, 255)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert render(str(broken)) is None


def test_page_filters_become_bound_sql():
    from clipsql.errors import QueryError
    from clipsql.web.filters import build_filter

    where, params = build_filter(date_from=dt.date(2021, 1, 1), date_to=dt.date(2021, 1, 31),
                                 camera="Canon", gps=False, label="dog",
                                 where="width > 10 -- my comment")
    # the box's fragment as PostgreSQL's parser printed it back (its comment gone), alone on
    # its line, so nothing it holds can swallow the page's own conditions
    assert where.splitlines()[1] == "width > 10"
    assert params == [dt.datetime(2021, 1, 1), dt.datetime(2021, 2, 1), "Canon", "dog"]
    assert where.count("%s") == 4 and "image_labels" in where
    assert build_filter() == (None, [])
    with pytest.raises(QueryError):
        build_filter(where="x" * 5000)
    where, params = build_filter(label="dog'); DROP TABLE x; --")
    assert params == ["dog'); DROP TABLE x; --"] and "DROP" not in where  # a value, bound


def test_row_ids_in_urls_are_plain_digits():
    from fastapi import HTTPException

    from clipsql.web.media import row_id

    assert row_id("42") == 42
    for bad in ("../1", "-1", "1.0", "\u0661", "", "1" * 30, "%31", "/etc/passwd"):
        with pytest.raises(HTTPException):
            row_id(bad)
