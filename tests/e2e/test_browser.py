"""The web UI in a real browser: Debian's headless Chromium driven by Playwright, against
``clipsql serve``'s app on loopback, on a fresh database loaded with the tiny model.

Needs the ``chromium`` apt package (``/usr/bin/chromium``, or set ``CLIPSQL_CHROMIUM``) and the
``playwright`` Python package (no Playwright browser download). Without them these tests skip
with a loud reason (or fail, with ``CLIPSQL_REQUIRE_BROWSER=1`` as CI sets); CI installs both.

``CLIPSQL_UPDATE_SCREENSHOT=1 pytest tests/e2e/test_browser.py -k screenshot`` rewrites
``docs/screenshot.png`` (from the real sample photos when ``../shared`` is present).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import EXIF_SAMPLES, ROOT, make_image

CHROMIUM = os.environ.get("CLIPSQL_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOUD = ("!!! BROWSER TESTS NOT RUN: {} -- install Debian's Chromium (apt-get install -y "
        "chromium) and the test extras (pip install -e '.[test]'); CI must have both !!!")
SCREENSHOT = ROOT / "docs" / "screenshot.png"
# Thumbnails load lazily: every one on screen must have arrived and decoded.
ON_SCREEN_LOADED = """() => {
  const imgs = [...document.querySelectorAll('#grid img')]
    .filter(i => i.getBoundingClientRect().top < window.innerHeight);
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


def _unavailable(why):
    # CI sets CLIPSQL_REQUIRE_BROWSER=1: there a missing browser is a failure, not a skip.
    if os.environ.get("CLIPSQL_REQUIRE_BROWSER"):
        pytest.fail(LOUD.format(why))
    pytest.skip(LOUD.format(why))


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        _unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    with sync_playwright() as p:
        # Playwright gives each launch a fresh temporary profile (--user-data-dir).
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


class UI:
    """A served collection, the library's view of it, and a fresh page that records errors."""

    def __init__(self, lib, url, page):
        self.lib, self.url, self.page = lib, url, page
        self.errors = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))

    def search(self, text):
        self.page.fill("#q", text)
        self.page.press("#q", "Enter")
        self.wait_idle()

    def wait_idle(self):
        self.page.wait_for_function(
            "() => !document.body.classList.contains('busy') && "
            "!/Searching/.test(document.getElementById('status').textContent)")

    def shown(self):
        """(path, score text) of every card, in grid order."""
        return [(c.locator(".name").get_attribute("title"),
                 c.locator(".score").inner_text().split()[-1])
                for c in self.page.locator("#grid .card").all()]

    def expected(self, hits):
        return [(h.path, f"{h.score:.3f}") for h in hits]

    def same_ranking(self, hits, shown=None):
        """The grid shows ``hits`` in order; images with equal scores may come in either order
        (near-duplicate synthetic images tie at half precision)."""
        shown = self.shown() if shown is None else shown
        want = self.expected(hits)
        if [s for _, s in shown] != [s for _, s in want]:
            return False
        groups = {}
        for (got_path, score), (want_path, _) in zip(shown, want):
            groups.setdefault(score, [set(), set()])
            groups[score][0].add(got_path)
            groups[score][1].add(want_path)
        return all(got == wanted for got, wanted in groups.values())

    def wait_thumbnails(self):
        self.page.wait_for_function(ON_SCREEN_LOADED, timeout=15000)


@pytest.fixture
def serve(browser, dsn, tiny_model, tmp_path, monkeypatch):
    """serve(folder) -> UI on a fresh database loaded from ``folder``."""
    import clipsql
    from clipsql.web import create_app, serve_in_thread

    opened = []

    def start(folder, viewport=(1000, 700)):
        lib = clipsql.connect(dsn, model=tiny_model)
        lib.load(folder)
        app = create_app(dsn, model=tiny_model, thumbnails_dir=tmp_path / "thumbs")
        server = serve_in_thread(app)
        url = server.__enter__()
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        opened.append((lib, server, page))
        ui = UI(lib, url, page)
        page.goto(url)
        page.wait_for_function("() => document.body.dataset.ready === '1'")
        return ui

    yield start
    for lib, server, page in opened:
        page.close()
        server.__exit__(None, None, None)
        lib.close()


def test_search_see_thumbnails_then_more_like_this(serve, photo_folder):
    ui = serve(photo_folder)
    page = ui.page
    page.wait_for_function("() => /12 images in the collection/.test("
                           "document.getElementById('status').textContent)")
    ui.search("a red square")
    assert ui.same_ranking(ui.lib.search("a red square", limit=40))
    ui.wait_thumbnails()
    assert page.locator("#more").is_hidden()
    assert "q=a+red+square" in page.url  # the address bar keeps the query (reload, share)

    first_path = ui.shown()[0][0]
    first_id = ui.lib.conn.execute("SELECT id FROM clipsql.images WHERE path = %s",
                                   (first_path,)).fetchone()[0]
    before = ui.shown()
    page.locator("#grid .card").first.locator("button.like").click()
    ui.wait_idle()
    after = ui.shown()
    assert after != before and first_path not in [p for p, _ in after]
    similar = ui.lib.similar(first_id, limit=40)
    assert len(after) == 11 and ui.same_ranking(similar, after)
    assert page.locator("#query").is_visible()
    assert Path(first_path).name in page.locator("#query-text").inner_text()
    ui.wait_thumbnails()

    page.reload()  # the same results come back from the address bar
    # idle can be seen before the reloaded page starts its search: wait for its cards
    page.wait_for_function("() => document.querySelectorAll('#grid .card').length > 0")
    ui.wait_idle()
    assert ui.same_ranking(similar)
    assert ui.errors == []


def test_open_full_image_filters_and_sql_box(serve, photo_folder):
    ui = serve(photo_folder)
    page = ui.page
    ui.search("stripes")
    page.locator("#grid .card .thumb").first.click()
    page.wait_for_function("() => { const i = document.getElementById('viewer-img'); "
                           "return document.getElementById('viewer').open && i.complete "
                           "&& i.naturalWidth > 0; }")
    like_path = ui.shown()[0][0]
    page.click("#viewer-like")  # "more like this" from the open image
    ui.wait_idle()
    assert like_path not in [p for p, _ in ui.shown()] and not page.locator("#viewer").is_visible()

    ui.search("stripes")
    page.click("#sql summary")
    page.fill("#where", "format = 'PNG'")
    page.press("#where", "Enter")
    ui.wait_idle()
    assert ui.same_ranking(ui.lib.search("stripes", where="format = 'PNG'", limit=40))
    assert len(ui.shown()) == 2

    page.fill("#where", "true; DELETE FROM clipsql.images")
    page.press("#where", "Enter")
    ui.wait_idle()
    assert page.locator("#status.error").is_visible() and ui.shown() == []
    assert ui.lib.conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0] == 12

    page.fill("#where", "")
    page.select_option("#gps", "true")  # no synthetic image has GPS
    ui.wait_idle()
    assert ui.shown() == [] and "No images match" in page.inner_text("#status")
    ui.errors = [e for e in ui.errors if "400" not in e]  # the refused WHERE logs its 400
    assert ui.errors == []


def test_a_filter_in_a_link_is_shown_but_runs_only_when_the_user_searches(serve, photo_folder):
    """``/?q=...&where=...`` from any site: the text search runs, the SQL filter only fills its
    box until the user presses Search; no search request carries it before that click."""
    from urllib.parse import parse_qs, urlencode, urlsplit

    ui = serve(photo_folder)
    page = ui.page
    sent = []
    page.on("request", lambda r: "/api/search" in r.url and sent.append(
        parse_qs(urlsplit(r.url).query)))
    where = "format = 'PNG'"
    page.goto(ui.url + "/?" + urlencode({"q": "stripes", "where": where}))
    page.wait_for_function("() => document.body.dataset.ready === '1'")
    ui.wait_idle()
    assert sent and all("where" not in query for query in sent), sent
    assert [query["q"] for query in sent] == [["stripes"]]
    assert page.input_value("#where") == where and page.locator("#where-pending").is_visible()
    assert ui.same_ranking(ui.lib.search("stripes", limit=40)) and len(ui.shown()) == 12
    assert "where=" in page.url  # the address bar still holds the link's whole state
    page.select_option("#gps", "false")  # another filter runs, the linked SQL still does not
    ui.wait_idle()
    assert "where" not in sent[-1] and sent[-1]["gps"] == ["false"] and len(ui.shown()) == 12

    page.click("#go")
    ui.wait_idle()
    assert sent[-1]["where"] == [where] and page.locator("#where-pending").is_hidden()
    assert ui.same_ranking(ui.lib.search("stripes", where=where, limit=40))
    assert len(ui.shown()) == 2

    # A hostile filter in a link: never sent on load; on the click, refused by name.
    count = len(sent)
    page.goto(ui.url + "/?" + urlencode({"q": "stripes", "where": "pg_sleep(5) IS NULL"}))
    page.wait_for_function("() => document.body.dataset.ready === '1'")
    ui.wait_idle()
    assert len(sent) == count + 1 and "where" not in sent[-1] and len(ui.shown()) == 12
    page.click("#go")
    ui.wait_idle()
    assert sent[-1]["where"] == ["pg_sleep(5) IS NULL"]
    assert "may not use the function pg_sleep" in page.inner_text("#status")
    assert page.locator("#status.error").is_visible() and ui.shown() == []
    ui.errors = [e for e in ui.errors if "400" not in e]  # the refused filter logs its 400
    assert ui.errors == []


def test_upload_a_photo_and_load_more(serve, photo_folder, tmp_path):
    for i in range(40):  # 52 images: more than one page of 40
        make_image(photo_folder / "more" / f"extra{i:02d}.png", color=(i * 6, 255 - i * 6, 90),
                   pattern=i % 9)
    ui = serve(photo_folder)
    page = ui.page
    query = make_image(tmp_path / "query.jpg", color=(230, 30, 30), pattern=2)
    page.set_input_files("#upload", str(query))
    ui.wait_idle()
    expected = ui.lib.search(image=str(query), limit=52)
    shown = ui.shown()
    assert [sc for _, sc in shown] == [sc for _, sc in ui.expected(expected[:40])]
    assert set(shown) <= set(ui.expected(expected))  # ties may straddle the page boundary
    assert "query.jpg" in page.inner_text("#query-text")
    page.click("#more")
    ui.wait_idle()
    shown = ui.shown()
    assert len(shown) == 52 and page.locator("#more").is_hidden()
    assert len({p for p, _ in shown}) == 52  # the second page continues, no repeats
    assert ui.same_ranking(expected, shown), (shown, ui.expected(expected))
    ui.wait_thumbnails()
    assert ui.errors == []


def test_screenshot(serve, photo_folder):
    """The README's screenshot: real sample photos when ../shared is there."""
    folder = EXIF_SAMPLES / "jpg" if EXIF_SAMPLES.is_dir() else photo_folder
    ui = serve(folder, viewport=(1000, 700))
    ui.search("a church on a hill")
    ui.wait_thumbnails()
    page = ui.page
    if EXIF_SAMPLES.is_dir():
        cameras = page.locator("#camera option").all_inner_texts()
        assert any(re.match(r"NIKON \(\d+\)", c) for c in cameras), cameras
    ui.page.mouse.move(0, 0)
    shot = page.screenshot(type="png")
    assert ui.errors == []
    if os.environ.get("CLIPSQL_UPDATE_SCREENSHOT"):
        from io import BytesIO

        from PIL import Image

        # A 256-colour palette keeps the committed PNG small (about 100-200 KB).
        img = Image.open(BytesIO(shot)).convert("RGB")
        img = img.quantize(256, method=Image.Quantize.MEDIANCUT)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        img.save(SCREENSHOT, optimize=True)
        assert SCREENSHOT.stat().st_size < 200_000


def test_add_and_remove_query_parts(serve, photo_folder):
    import clipsql

    ui = serve(photo_folder)
    page = ui.page
    ui.search("a red square")
    first_path = ui.shown()[0][0]
    first_id = ui.lib.conn.execute("SELECT id FROM clipsql.images WHERE path = %s",
                                   (first_path,)).fetchone()[0]
    page.locator("#grid .card").first.locator("button.minus-part").click()  # less like this
    ui.wait_idle()
    assert page.locator("#parts .part").count() == 1 and f"#{first_id}" in page.inner_text("#parts")
    expected = ui.lib.search(["a red square", clipsql.Not(first_id)], limit=40)
    assert ui.same_ranking(expected)
    assert f"minus_image_id={first_id}" in page.url
    page.fill("#minus", "stripes")
    page.press("#q", "Enter")  # a new text search clears the image parts, keeps the minus text
    ui.wait_idle()
    assert page.locator("#parts").is_hidden()
    assert ui.same_ranking(ui.lib.search(["a red square", clipsql.Not("stripes")], limit=40))
    page.select_option("#order_by", "taken_at desc")
    ui.wait_idle()
    assert "order_by=taken_at+desc" in page.url
    assert ui.errors == []


DATES_FIT = """() => [...document.querySelectorAll('#grid .card')].map(card => {
  const line = card.querySelector('.when'), date = line.querySelector('.date');
  const box = line.getBoundingClientRect(), day = date.getBoundingClientRect();
  return {text: date.textContent, overflow: line.scrollWidth - line.clientWidth,
          pieces: date.getClientRects().length,
          inside: day.left >= box.left - 0.5 && day.right <= box.right + 0.5 && day.width > 0};
})"""


@pytest.mark.parametrize("viewport", [(1000, 700), (390, 800)], ids=["desktop", "phone"])
def test_the_cards_show_the_whole_date(serve, tmp_path, viewport):
    """A card's date is never cut, nor split over two lines: not beside the buttons, not with
    a long camera name, not on a phone's narrow cards."""
    from PIL import Image

    folder = tmp_path / "dated"
    for i, make in enumerate(["Canon", "NIKON CORPORATION WITH A VERY LONG MAKER NAME", ""]):
        exif = Image.Exif()
        exif[0x010F] = make or "x"
        exif.get_ifd(0x8769)[0x9003] = f"2021:0{i + 1}:2{i} 10:00:00"
        make_image(folder / f"d{i}.jpg", color=(60 * i, 90, 200), pattern=i, exif=exif)
    ui = serve(folder, viewport=viewport)
    ui.search("a photo")
    cards = ui.page.evaluate(DATES_FIT)
    assert sorted(c["text"] for c in cards) == ["2021-01-20", "2021-02-21", "2021-03-22"]
    for c in cards:
        assert c["overflow"] <= 0 and c["pieces"] == 1 and c["inside"], cards
    assert ui.errors == []
