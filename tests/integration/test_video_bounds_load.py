"""A load goes on past hostile videos (issue 28): one past its deadline is a failure
``too_slow``, one whose decoder cannot fit the budget ``decompression_bomb`` (never decoded),
a 20 GB sparse file named .mp4 a quick failure; the other files of the folder load."""

import psycopg
import pytest

from tests.conftest import make_image
from tests.unit.test_video_bounds import h264

pytestmark = pytest.mark.integration


def test_a_load_goes_on_past_slow_and_bomb_videos(db, dsn, tmp_path, monkeypatch):
    root = tmp_path / "media"
    make_image(root / "a_still.png", color=(200, 200, 30))
    h264(root / "b_slow.mp4", (1024, 1024), 40, fps=4)
    h264(root / "c_refs16.mp4", (8192, 8192), 1, refs=16)
    with open(root / "d_sparse.mp4", "wb") as f:
        f.truncate(20 << 30)
    make_image(root / "e_after.png", color=(30, 200, 200))
    monkeypatch.setenv("CLIPSQL_DECODE_DEADLINE", "0.001")  # CPU seconds: the video's is gone
    report = db.load(root)
    assert (report.added, report.failed) == (2, 3), report.failures
    with psycopg.connect(dsn) as conn:
        failures = dict(conn.execute(
            "SELECT regexp_replace(path, '.*/', ''), reason FROM clipsql.failures").fetchall())
        loaded = {p.rsplit("/", 1)[1] for (p,) in conn.execute("SELECT path FROM clipsql.images")}
    assert failures == {"b_slow.mp4": "too_slow", "c_refs16.mp4": "decompression_bomb",
                        "d_sparse.mp4": "corrupt"}
    assert loaded == {"a_still.png", "e_after.png"}
