"""A video moment in the real browser (headless Chromium, as tests/e2e/test_browser.py runs
it): its card shows the moment's time, and its detail view plays the video from there."""

from __future__ import annotations

import pytest

from tests.conftest import make_image
from tests.e2e.test_browser import browser, serve  # noqa: F401 (the fixtures)
from tests.videos import THREE_SCENES, make_video

pytestmark = pytest.mark.e2e


def test_a_moment_opens_its_video_at_its_start(serve, tmp_path):  # noqa: F811
    folder = tmp_path / "media"
    make_image(folder / "still.png", color=(200, 200, 30))
    make_video(folder / "clip.webm", THREE_SCENES)  # VP9: every Chromium build plays it
    ui = serve(folder)
    page = ui.page
    ui.search("a coloured picture")
    assert len(ui.shown()) == 4
    ui.wait_thumbnails()
    times = page.locator("#grid .card .time").all_inner_texts()
    assert sorted(times) == ["▶ 0:00", "▶ 0:03", "▶ 0:07"], times
    start = ui.lib.conn.execute(
        "SELECT start_s FROM clipsql.images WHERE start_s > 1 ORDER BY start_s LIMIT 1"
    ).fetchone()[0]
    card = page.locator("#grid .card", has=page.locator(".time", has_text="0:03"))
    card.locator(".thumb").click()
    page.wait_for_function("""(start) => {
        const v = document.getElementById('viewer-video');
        return document.getElementById('viewer').open && !v.hidden && v.readyState >= 1
            && Math.abs(v.currentTime - start) < 0.3;
    }""", arg=start, timeout=15000)
    src = page.eval_on_selector("#viewer-video", "v => v.currentSrc")
    assert "/videos/" in src and src.endswith(f"#t={start:g}")
    assert page.locator("#viewer-img").is_hidden()
    page.click("#viewer-close")
    # the dialog's close event empties the player: awaited, not read at once
    page.wait_for_function("() => { const v = document.getElementById('viewer-video'); "
                           "return v.hidden && !v.getAttribute('src'); }", timeout=10000)
    # a still image opens as an image again
    page.locator("#grid .card", has_not=page.locator(".time")).locator(".thumb").click()
    page.wait_for_function("() => { const i = document.getElementById('viewer-img'); "
                           "return !i.hidden && i.complete && i.naturalWidth > 0; }")
    assert ui.errors == []
