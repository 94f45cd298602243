"""The web server's media work runs in a bounded pool of its own, for real (a live uvicorn on
loopback, the embedded PostgreSQL, real images and a real H.264 video): a flood of media
requests gets 503 with Retry-After past the pool's queue while /api/status and searches still
answer; the same media asked for at once is made once; a file replaced by a 20 GB sparse file
is refused from its size, unread; requests that wait for a hash hold no thread; status over
HTTP shows no path of the machine; a percent-encoded id is 404."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from tests.conftest import fresh_database, make_image
from tests.videos import THREE_SCENES, make_video

pytestmark = pytest.mark.integration

WAIT_S = 30  # an upper bound for a condition that holds in milliseconds (never a timing assertion)


@pytest.fixture(scope="module")
def media_dsn(pg_admin_url):
    with fresh_database(pg_admin_url, "clipsql_media") as url:
        yield url


@pytest.fixture(scope="module")
def loaded(media_dsn, tiny_model, tmp_path_factory):
    """Six still images and one three-scene video (three moments)."""
    import clipsql

    root = tmp_path_factory.mktemp("media-pool")
    for i in range(6):
        make_image(root / f"p{i}.png", color=(30 * i, 200 - 20 * i, 90), pattern=i)
    make_video(root / "clip.mp4", THREE_SCENES)
    with clipsql.connect(media_dsn, model=tiny_model) as collection:
        report = collection.load(root)
        assert report.added == 7 and report.moments == 3, report
    with psycopg.connect(media_dsn) as conn:
        rows = conn.execute("SELECT id, path, start_s FROM clipsql.images "
                            "ORDER BY path, start_s").fetchall()
    return root, {"stills": [r[0] for r in rows if r[2] is None],
                  "moments": [r[0] for r in rows if r[2] is not None]}


@pytest.fixture
def serve(media_dsn, tiny_model, tmp_path):
    """``serve(**create_app_options)`` -> (client, app) on a live server, closed after."""
    from contextlib import ExitStack

    from clipsql.web import create_app, serve_in_thread

    with ExitStack() as stack:
        def start(**options):
            app = create_app(media_dsn, model=tiny_model, thumbnails_dir=tmp_path / "thumbs",
                             **options)
            url = stack.enter_context(serve_in_thread(app))
            client = stack.enter_context(httpx.Client(base_url=url, timeout=WAIT_S))
            return client, app
        yield start


@pytest.fixture
def submits(monkeypatch):
    """Counts the media jobs asked of every pool (joined or new)."""
    from clipsql.web.media import MediaPool

    calls = []
    original = MediaPool.submit

    def counting(self, key, fn, *args):
        calls.append(key)
        return original(self, key, fn, *args)

    monkeypatch.setattr(MediaPool, "submit", counting)
    return calls


def until(condition, what):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_flood_gets_503_while_status_and_searches_answer(loaded, serve, submits,
                                                           monkeypatch):
    """One thread, two waiting jobs: a blocked thumbnail holds the only thread; requests for
    the same thumbnails join their jobs, new ones past the queue get 503 + Retry-After at
    once, and /api/status, facets and a search of stored texts answer meanwhile."""
    from clipsql.ingest.thumbnails import ThumbnailCache

    _, ids = loaded
    stills = ids["stills"]
    release, made = threading.Event(), Counter()
    original = ThumbnailCache.get

    def slow(self, image_id, sha256, path, size, **kw):
        made[image_id] += 1
        assert release.wait(WAIT_S)  # a decode that takes as long as the test wants
        return original(self, image_id, sha256, path, size, **kw)

    monkeypatch.setattr(ThumbnailCache, "get", slow)
    client, app = serve(media_threads=1, media_queue=2)
    pool = app.state.media
    wanted = [stills[0]] * 4 + [stills[1], stills[2]] * 2
    with ThreadPoolExecutor(len(wanted)) as senders:
        first = [senders.submit(client.get, f"/thumbs/{i}") for i in wanted]
        until(lambda: len(submits) == len(wanted) and made[stills[0]] == 1,
              "the requests reach the pool")
        assert pool.pending == 3  # one running (blocked), two waiting: the pool is full
        for other in stills[3:]:  # past the queue: refused at once, no thread held
            r = client.get(f"/thumbs/{other}")
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) > 0 and "busy" in r.json()["detail"]
            r = client.get(f"/images/{other}")  # the same pool
            assert r.status_code == 503 and "retry-after" in r.headers
        # the rest of the server answers while every media thread is blocked
        status = client.get("/api/status")
        assert status.status_code == 200 and status.json()["images"] == 9
        assert client.get("/api/facets").status_code == 200
        words = client.get("/api/search", params={"words": "hello"})
        assert words.status_code == 200 and words.json()["results"] == []
        assert not any(f.done() for f in first)
        release.set()
        answers = [f.result() for f in first]
    assert [r.status_code for r in answers] == [200] * len(wanted)
    assert all(r.headers["content-type"] == "image/jpeg" for r in answers)
    assert len({r.content for r in answers[:4]}) == 1
    assert made == {stills[0]: 1, stills[1]: 1, stills[2]: 1}  # one decode per thumbnail
    until(lambda: pool.pending == 0, "the pool drains")
    assert client.get(f"/thumbs/{stills[3]}").status_code == 200  # room again


def test_a_moment_asked_for_at_once_is_decoded_once(loaded, serve, monkeypatch):
    from clipsql.ingest import video

    _, ids = loaded
    moment = ids["moments"][1]
    release, calls = threading.Event(), []
    frame_at = video.frame_at

    def slow(path, start_s, **kw):
        calls.append(start_s)
        assert release.wait(WAIT_S)
        return frame_at(path, start_s, **kw)

    monkeypatch.setattr(video, "frame_at", slow)
    client, app = serve()
    with ThreadPoolExecutor(6) as senders:
        answers = [senders.submit(client.get, f"/thumbs/{moment}") for _ in range(6)]
        until(lambda: calls, "the first decode starts")
        time.sleep(0.2)  # the others arrive while it is blocked (more time only helps)
        release.set()
        answers = [a.result() for a in answers]
    assert [r.status_code for r in answers] == [200] * 6
    assert len(calls) == 1, calls


def test_a_video_replaced_by_a_sparse_20_gb_file_is_404_unread(loaded, serve, monkeypatch,
                                                               tmp_path):
    """A loaded video replaced by a 20 GB sparse file (nothing on disk): every request is
    404 from its size, no byte of it hashed, and status answers meanwhile."""
    from clipsql.web import files

    root, ids = loaded
    video = root / "clip.mp4"
    saved = tmp_path / "saved.mp4"
    os.replace(video, saved)
    hashed = []
    digest = files._digest

    def counting(f, limit, *args, **kwargs):
        hashed.append(limit)
        return digest(f, limit, *args, **kwargs)

    monkeypatch.setattr(files, "_digest", counting)
    try:
        with open(video, "wb") as f:
            os.truncate(f.fileno(), 20 << 30)
        client, _ = serve()
        urls = [f"/videos/{m}" for m in ids["moments"]] * 5 + \
            [f"/thumbs/{m}" for m in ids["moments"]] + [f"/images/{ids['moments'][0]}"]
        with ThreadPoolExecutor(8) as senders:
            answers = list(senders.map(client.get, urls))
            assert client.get("/api/status").status_code == 200
        assert {r.status_code for r in answers} == {404}, [r.text for r in answers]
        assert all(r.json()["detail"] == files.CHANGED for r in answers)
        assert hashed == []
    finally:
        os.replace(saved, video)


def test_requests_waiting_for_a_hash_hold_no_thread(loaded, serve, submits, monkeypatch):
    """While one job hashes a video nobody checked yet, requests for its other moments find
    it being hashed and give their thread back (the pool takes only three jobs here, yet six
    more requests get in); then all are served from the one hash. (Three, not two: once the
    hash is done the waiters run their jobs again, one per moment, while the first job may
    not have left the pool yet.)"""
    from collections import OrderedDict

    from clipsql.web import files

    _, ids = loaded
    monkeypatch.setattr(files, "_known", OrderedDict())  # nothing remembered
    release, hashed = threading.Event(), []
    digest = files._digest

    def slow(f, limit, *args, **kwargs):
        hashed.append(limit)
        assert release.wait(WAIT_S)
        return digest(f, limit, *args, **kwargs)

    monkeypatch.setattr(files, "_digest", slow)
    client, app = serve(media_threads=2, media_queue=1)
    first, *others = ids["moments"]
    with ThreadPoolExecutor(8) as senders:
        hashing = senders.submit(client.get, f"/videos/{first}", headers={"Range": "bytes=0-9"})
        until(lambda: hashed, "the hash starts")
        waiting = []
        for i in range(6):  # one at a time: each finds the hash running and leaves the pool
            waiting.append(senders.submit(client.get, f"/videos/{others[i % 2]}",
                                          headers={"Range": "bytes=0-9"}))
            until(lambda n=i + 2: len(submits) == n and app.state.media.pending == 1,
                  "the waiting job gives its thread back")
        assert client.get("/api/status").status_code == 200
        release.set()
        answers = [hashing.result()] + [w.result() for w in waiting]
    assert [r.status_code for r in answers] == [206] * 7, [r.text for r in answers]
    assert len({r.content for r in answers}) == 1
    assert len(hashed) == 1


def test_status_over_http_shows_no_path_of_the_machine(loaded, serve, media_dsn, tiny_model):
    import clipsql
    from clipsql.models import cache

    root, _ = loaded
    client, _ = serve()
    body = client.get("/api/status").json()
    text = json.dumps(body)
    socket_dir = psycopg.conninfo.conninfo_to_dict(media_dsn).get("host") or ""
    checkpoint = tiny_model.split("/", 1)[1]
    for secret in (os.environ["CLIPSQL_HOME"], str(cache.root()), checkpoint, str(root)):
        assert secret not in text, secret
    if socket_dir.startswith("/"):
        assert socket_dir not in text
    strings = []

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            strings.append(value)

    walk(body)
    assert not [s for s in strings if s.startswith("/") or " /" in s or "(/" in s], strings
    assert body["images"] == 9 and body["cache"].keys() == {"bytes"}
    shown = body["model"]["pretrained"]  # a checkpoint by its file name
    assert os.path.basename(checkpoint) in shown and "/" not in shown, shown
    # the local CLI's status still shows them
    with clipsql.connect(media_dsn, model=tiny_model) as collection:
        assert collection.status()["cache"]["path"] == str(cache.root())


def test_a_percent_encoded_id_is_404(loaded, serve):
    _, ids = loaded
    still, moment = ids["stills"][0], ids["moments"][0]
    client, _ = serve()
    encoded = "".join(f"%{b:02X}" for b in str(still).encode())
    for url in (f"/images/{still}", f"/thumbs/{still}", f"/api/images/{still}",
                f"/api/images/{still}/words"):
        assert client.get(url).status_code == 200, url
        assert client.get(url.replace(str(still), encoded)).status_code == 404, url
    assert client.get(f"/videos/{moment}").status_code == 200
    encoded = "".join(f"%{b:02X}" for b in str(moment).encode())
    assert client.get(f"/videos/{encoded}").status_code == 404
    # ...whatever else the query string holds
    assert client.get(f"/images/{still}", params={"v": "%31"}).status_code == 200
