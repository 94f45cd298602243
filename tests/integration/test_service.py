"""The one query service behind every surface (clipsql/service.py), on real PostgreSQL: a
model switch is seen by the web app, the psycopg helpers and the SQLAlchemy expressions,
from several threads at once; one service serves many threads; image references resolve the
same way everywhere."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
import pytest

import clipsql
import clipsql.psycopg
import clipsql.sqlalchemy as cs
from clipsql.database import connection
from clipsql.errors import QueryError
from clipsql.service import QueryService
from tests.integration.test_reembed import wide_model  # noqa: F401  (a fixture)

QUERY = "a red square"
THREADS = 6


def _surfaces(dsn, web_url):
    """One call of each surface, as a thread would make it: the dimension of the query vector
    psycopg and SQLAlchemy embed, and the ids the web app ranks."""
    import httpx

    with psycopg.connect(dsn) as conn:
        clipsql.psycopg.register(conn)
        by_psycopg = clipsql.psycopg.text_query(conn, QUERY).to_numpy()
    by_sqlalchemy = cs.clip_text(QUERY).clause.value  # the bound vector
    with httpx.Client(base_url=web_url, timeout=60) as client:
        answer = client.get("/api/search", params={"q": QUERY, "limit": 5})
    assert answer.status_code == 200, answer.text
    return by_psycopg, np.asarray(by_sqlalchemy), [h["id"] for h in answer.json()["results"]]


def _all_threads(dsn, web_url):
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda _: _surfaces(dsn, web_url), range(THREADS)))


def test_a_switch_is_seen_by_the_web_app_psycopg_and_sqlalchemy_from_threads(
        dsn, tiny_model, wide_model, photo_folder, tmp_path):  # noqa: F811
    from clipsql.web import create_app, serve_in_thread

    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        before_ids = [h.id for h in db.search(QUERY, limit=5)]
        before_vec = db.embed_text(QUERY)
    cs.close()
    cs.configure(dsn)
    app = create_app(dsn, thumbnails_dir=tmp_path / "thumbs")
    try:
        with serve_in_thread(app) as url:
            for by_psycopg, by_sqlalchemy, ids in _all_threads(dsn, url):
                assert by_psycopg.shape == by_sqlalchemy.shape == (32,)
                assert np.allclose(by_psycopg, before_vec, atol=2e-3)
                assert np.allclose(by_sqlalchemy, before_vec, atol=2e-3)
                assert ids == before_ids
            with clipsql.connect(dsn) as db:  # another connection switches the model
                report = db.reembed(wide_model)
                assert report.state == "done"
                after_ids = [h.id for h in db.search(QUERY, limit=5)]
                after_vec = db.embed_text(QUERY)
            assert after_vec.shape == (48,)
            for by_psycopg, by_sqlalchemy, ids in _all_threads(dsn, url):
                assert np.allclose(by_psycopg, after_vec, atol=2e-3)
                assert np.allclose(by_sqlalchemy, after_vec, atol=2e-3)
                assert ids == after_ids
    finally:
        cs.close()


def test_one_service_many_threads_same_answers_as_one(db, photo_folder):
    db.load(photo_folder)
    queries = ["red", "green stripes", "a dark photo", "blue", "something bright", "a cat"]
    expected = {q: [h.id for h in db.search(q, limit=4)] for q in queries}
    service = QueryService()  # no model named: the collection's own
    local = threading.local()

    def search(q):
        if not hasattr(local, "conn"):
            local.conn = connection.connect(db.dsn)
        return q, [h.id for h in service.search(local.conn, q, limit=4, store=False)]

    with ThreadPoolExecutor(THREADS) as pool:
        got = dict(pool.map(search, queries * 4))
    assert got == expected
    assert service.loaded is None  # every text was stored by db.search: no model was needed
    with connection.connect(db.dsn) as conn:
        fresh = service.embed_text(conn, "a text nobody searched", store=False)
        assert service.loaded is not None and service.loaded.identity() == db.model.identity()
        assert np.allclose(fresh, db.embed_text("a text nobody searched"), atol=1e-6)


def test_image_references_resolve_the_same_on_every_surface(db, photo_folder):
    db.load(photo_folder)
    vectors = np.eye(3, 32, dtype=np.float32)
    db.add_embeddings(["https://example.com/a.jpg", "relative/b.jpg", "c"], vectors)
    # A stored key is found as given (a URL, a relative key), before any local path.
    for key, vec in zip(["https://example.com/a.jpg", "relative/b.jpg", "c"], vectors):
        assert np.allclose(db.embed_image(key), vec, atol=1e-3)
        hits = db.similar(key, limit=3)
        assert key not in [h.path for h in hits] and len(hits) == 3  # itself excluded
        with psycopg.connect(db.dsn) as conn:
            clipsql.psycopg.register(conn)
            assert np.allclose(clipsql.psycopg.image_query(conn, key).to_numpy(), vec, atol=1e-3)
    # A file that does not exist is said to not exist (not "vanished").
    with pytest.raises(QueryError, match="sunset.jpg as a query image: no such file"):
        db.search(image="sunset.jpg")
    with pytest.raises(QueryError, match="no image with key nowhere.jpg"):
        with psycopg.connect(db.dsn) as conn:
            clipsql.psycopg.register(conn)
            clipsql.psycopg.image_query(conn, "nowhere.jpg")


def test_the_docs_example_of_one_service_in_threads_runs(db, photo_folder):
    import re
    from pathlib import Path

    db.load(photo_folder)
    page = (Path(__file__).resolve().parents[2] / "docs" / "python.md").read_text()
    section = page.split("## One query service, many threads", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    namespace = {"url": db.dsn}
    exec(compile(code, "docs/python.md", "exec"), namespace)
    expected = [[h.path for h in db.search(t, limit=5)]
                for t in ["a beach", "a dog", "snow", "a red car"]]
    assert namespace["results"] == expected
