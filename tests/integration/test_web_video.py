"""Video moments in the web API: a moment's hit carries its time, its thumbnail and image are
the keyframe (the frame at ``start_s``), and ``/videos/ID`` sends the video file with byte
ranges, only while it is the file that was loaded and only for rows that are moments."""

from __future__ import annotations

import io
import os
import time

import httpx
import psycopg
import pytest

from tests.conftest import make_image
from tests.videos import THREE_SCENES, make_video

pytestmark = pytest.mark.integration


@pytest.fixture
def served(db, dsn, tiny_model, tmp_path):
    """A collection of one still image and one three-scene video, served on loopback."""
    from clipsql.web import create_app, serve_in_thread

    root = tmp_path / "media"
    make_image(root / "still.png", color=(200, 200, 30))
    video = make_video(root / "clip.mp4", THREE_SCENES)
    report = db.load(root)
    assert report.added == 2 and report.moments == 3, report
    app = create_app(dsn, model=tiny_model, thumbnails_dir=tmp_path / "thumbs")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, root, video


def rows(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, path, start_s, end_s FROM clipsql.images "
                            "ORDER BY path, start_s NULLS FIRST").fetchall()


def moment_hits(client):
    body = client.get("/api/search", params={"q": "a coloured picture", "limit": 10}).json()
    return sorted((h for h in body["results"] if h["start_s"] is not None),
                  key=lambda h: h["start_s"]), body["results"]


def dominant(jpeg: bytes):
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as img:
        assert img.format == "JPEG"
        rgb = img.convert("RGB")
        # the scene's colour covers most of the frame (a few stripes of its complement)
        return max(rgb.getcolors(rgb.width * rgb.height), key=lambda c: c[0])[1], rgb.size


def close(a, b, tol=40):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def test_a_moment_hit_has_its_times_keyframe_and_video_url(served, dsn):
    client, root, video = served
    moments, hits = moment_hits(client)
    assert len(hits) == 4 and len(moments) == 3
    still = next(h for h in hits if h["start_s"] is None)
    assert still["end_s"] is None and still["video_url"] is None
    starts = [m["start_s"] for m in moments]
    assert starts[0] == 0 and abs(starts[1] - 3) <= 0.5 and abs(starts[2] - 7) <= 0.5
    assert all(m["end_s"] > m["start_s"] for m in moments)
    assert all(m["path"] == str(video) and m["name"] == "clip.mp4" for m in moments)
    for m in moments:
        assert m["video_url"] == f"/videos/{m['id']}?v={m['sha256'][:16]}"
        assert m["image_url"].startswith(f"/images/{m['id']}?")
    # each moment's thumbnail and image are the frame at its start, as JPEGs
    for m, (color, _) in zip(moments, THREE_SCENES):
        r = client.get(m["thumbnail_url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text
        got, size = dominant(r.content)
        assert close(got, color), (m["start_s"], got, color)
        assert max(size) <= 320
        again = client.get(m["thumbnail_url"], headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        full = client.get(m["image_url"])
        assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
        assert close(dominant(full.content)[0], color)
    # the moments' thumbnails differ (one per moment, not one per video file)
    assert len({client.get(m["thumbnail_url"]).headers["etag"] for m in moments}) == 3
    info = client.get(f"/api/images/{moments[1]['id']}").json()
    assert info["start_s"] == moments[1]["start_s"] and info["video_url"] == moments[1]["video_url"]


def test_videos_are_sent_with_byte_ranges(served):
    client, root, video = served
    moments, _ = moment_hits(client)
    data = video.read_bytes()
    size = len(data)
    url = f"/videos/{moments[1]['id']}"

    whole = client.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-length"] == str(size)
    assert whole.headers["x-content-type-options"] == "nosniff"

    r = client.get(url, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == data[:100]
    assert r.headers["content-range"] == f"bytes 0-99/{size}"
    assert r.headers["content-length"] == "100" and r.headers["content-type"] == "video/mp4"

    r = client.get(url, headers={"Range": "bytes=0-"})
    assert r.status_code == 206 and r.content == data
    assert r.headers["content-range"] == f"bytes 0-{size - 1}/{size}"

    r = client.get(url, headers={"Range": f"bytes={size - 10}-{size + 500}"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = client.get(url, headers={"Range": "bytes=-25"})
    assert r.status_code == 206 and r.content == data[-25:]
    assert r.headers["content-range"] == f"bytes {size - 25}-{size - 1}/{size}"
    # several ranges: the first one within the file, as a single part
    r = client.get(url, headers={"Range": f"bytes={size + 5}-, 10-19, 30-39"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{size}"

    for past in (f"bytes={size}-", f"bytes={size + 100}-{size + 200}", "bytes=-0"):
        r = client.get(url, headers={"Range": past})
        assert r.status_code == 416, (past, r.status_code)
        assert r.headers["content-range"] == f"bytes */{size}"
    # a header that cannot be parsed, or another unit, is ignored: the whole file
    for ignored in ("bytes=abc", "lines=0-1", "bytes=9-3", "bytes=1-2-3", "bytes=١-٢".encode()):
        r = client.get(url, headers={"Range": ignored})
        assert r.status_code == 200 and len(r.content) == size, ignored
    # If-Range with another version's ETag: the whole file; with this one's: the range
    r = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert r.status_code == 200 and len(r.content) == size
    r = client.get(url, headers={"Range": "bytes=0-9", "If-Range": whole.headers["etag"]})
    assert r.status_code == 206 and r.content == data[:10]
    assert client.get(url, headers={"If-None-Match": whole.headers["etag"]}).status_code == 304
    # a video of another site's page is refused
    assert client.get(url, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_only_moments_of_the_loaded_file_are_served(served, dsn):
    client, root, video = served
    still = next(r for r in rows(dsn) if r[2] is None)
    r = client.get(f"/videos/{still[0]}")
    assert r.status_code == 404 and "not a video moment" in r.json()["detail"]
    assert client.get("/videos/999999").status_code == 404
    assert client.get("/videos/1x").status_code == 404
    assert client.get("/videos/-1").status_code == 404

    moments, _ = moment_hits(client)
    first = moments[0]
    assert client.get(f"/videos/{first['id']}", headers={"Range": "bytes=0-9"}).status_code == 206
    # the file replaced after the load (another video at the same path): nothing of it is sent
    replaced = root / "other.mp4"
    make_video(replaced, [((250, 250, 250), 2)])
    time.sleep(0.01)
    os.replace(replaced, video)
    for path in (f"/videos/{first['id']}", f"/images/{first['id']}"):
        r = client.get(path, headers={"Range": "bytes=0-9"})
        assert r.status_code == 404 and "changed" in r.json()["detail"], path
    # a thumbnail not yet cached cannot be made from the new content either
    assert client.get(f"/thumbs/{moments[2]['id']}").status_code == 404
    # a symlink to another file in its place: still 404
    video.unlink()
    video.symlink_to(root / "still.png")
    assert client.get(f"/videos/{first['id']}").status_code == 404
    video.unlink()
    assert client.get(f"/videos/{first['id']}").status_code == 404


def test_the_openapi_description_has_the_video_route(served):
    client, _, _ = served
    spec = client.get("/openapi.json").json()
    route = spec["paths"]["/videos/{image_id}"]["get"]
    assert {"200", "206", "404", "416"} <= set(route["responses"])
    assert any(p["name"] == "range" and p["in"] == "header" for p in route["parameters"])
    hit = spec["components"]["schemas"]["Hit"]["properties"]
    assert {"start_s", "end_s", "video_url"} <= set(hit)


def test_any_range_header_gets_a_whole_a_part_or_a_416(served):
    """Generated Range headers (well-formed or not): 200 with the file, 206 with exactly the
    bytes its Content-Range names, or 416; never anything else."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client, _, video = served
    moments, _ = moment_hits(client)
    url = f"/videos/{moments[0]['id']}"
    data = video.read_bytes()
    size = len(data)
    number = st.one_of(st.integers(0, size + 50), st.integers(0, 2**70)).map(str)
    spec = st.one_of(st.tuples(number, st.just("-"), number).map("".join),
                     st.tuples(number, st.just("-")).map("".join),
                     st.tuples(st.just("-"), number).map("".join),
                     st.text(st.sampled_from("0123456789-, =bytes"), max_size=20))
    header = st.one_of(st.lists(spec, min_size=1, max_size=4).map(lambda s: "bytes=" + ",".join(s)),
                       st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
                       .map(str.strip))  # a value HTTP can carry (no edge spaces)

    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(value=header)
    def check(value):
        r = client.get(url, headers={"Range": value})
        assert r.status_code in (200, 206, 416), (value, r.status_code, r.text)
        if r.status_code == 200:
            assert r.content == data
        elif r.status_code == 206:
            first, last = map(int, r.headers["content-range"].removeprefix("bytes ")
                              .split("/")[0].split("-"))
            assert r.headers["content-range"].endswith(f"/{size}")
            assert r.content == data[first:last + 1] and 0 <= first <= last < size
        else:
            assert r.headers["content-range"] == f"bytes */{size}"

    check()


def test_a_video_is_hashed_once_however_many_requests_ask(served, monkeypatch):
    """The full SHA-256 of a video is read once per file identity (then remembered), also
    when many requests for it arrive together; a replaced video's too (404s, not re-reads)."""
    from concurrent.futures import ThreadPoolExecutor

    from clipsql.web import files

    client, root, video = served
    moments, _ = moment_hits(client)
    calls = []
    digest = files._digest

    def counting(f, limit, *args, **kwargs):
        calls.append(limit)
        time.sleep(0.2)  # a long hash: the others arrive while it runs
        return digest(f, limit, *args, **kwargs)

    monkeypatch.setattr(files, "_digest", counting)
    fresh = root / "fresh.mp4"
    data = bytearray(video.read_bytes())
    data[-1] ^= 0xFF  # the loaded size (another size is refused unread), another content
    fresh.write_bytes(data)
    os.replace(fresh, video)  # a new identity: nothing remembered for it
    urls = [f"/videos/{m['id']}" for m in moments] * 4
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda u: client.get(u, headers={"Range": "bytes=0-9"}), urls))
    assert {r.status_code for r in answers} == {404}  # not the loaded video
    assert len(calls) == 1, calls
    assert client.get(urls[0]).status_code == 404 and len(calls) == 1
