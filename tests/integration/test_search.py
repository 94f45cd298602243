"""Search on real PostgreSQL: ranking, filters with bound parameters, read-only safety."""

import numpy as np
import pytest

from clipsql.errors import EmptyCollectionError, ModelMismatchError, QueryError
from tests.conftest import insert_vectors


def brute_force(db, query, where="true"):
    rows = db.conn.execute(f"SELECT id, embedding FROM clipsql.images WHERE {where}").fetchall()
    ids = np.array([r[0] for r in rows])
    emb = np.stack([r[1].to_numpy().astype(np.float32) for r in rows])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = emb @ query
    order = np.argsort(-scores, kind="stable")
    return ids[order].tolist(), scores[order]


def test_text_search_matches_brute_force(db, photo_folder):
    db.load(photo_folder)
    hits = db.search("a red square", limit=5)
    query = db.embed_text("a red square")
    assert abs(np.linalg.norm(query) - 1) < 1e-5
    ids, scores = brute_force(db, query)
    assert [h.id for h in hits] == ids[:5]
    assert np.allclose([h.score for h in hits], scores[:5], atol=2e-3)
    assert hits[0].path.startswith(str(photo_folder)) and hits[0].width == 96


def test_image_query_by_path_and_by_id_excludes_itself(db, photo_folder):
    db.load(photo_folder)
    target = str(next(photo_folder.rglob("img05.*")))
    by_path = db.search(image=target, limit=3)
    image_id = db.conn.execute("SELECT id FROM clipsql.images WHERE path = %s", (target,)).fetchone()[0]
    by_id = db.similar(image_id, limit=3)
    assert [h.id for h in by_path] == [h.id for h in by_id]
    assert image_id not in [h.id for h in by_id]


def test_where_filter_with_parameters(db, photo_folder):
    db.load(photo_folder)
    hits = db.search("anything", where="format = %s AND width > %s", params=["PNG", 10], limit=50)
    assert hits and all(h.format == "PNG" for h in hits)
    assert len(hits) == 2


@pytest.mark.parametrize("hostile", [
    "true; DROP TABLE clipsql.images",
    "true) OR (true",
    "(SELECT count(*) FROM pg_class) > 0 --",
    "id IN (SELECT id FROM clipsql.images FOR UPDATE)",
    "clipsql_nonexistent_function()",
])
def test_hostile_where_fragments_cannot_write(db, photo_folder, hostile):
    db.load(photo_folder)
    try:
        db.search("x", where=hostile)
    except QueryError as exc:
        assert str(exc)
    assert db.conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0] == 12
    assert db.search("x", limit=3)  # the connection is still usable


def test_where_fragment_cannot_change_session_settings(db, photo_folder):
    db.load(photo_folder)
    db.search("x", where="set_config('search_path', 'pg_catalog', false) IS NOT NULL")
    assert db.conn.execute("SHOW search_path").fetchone()[0] != "pg_catalog"
    assert len(db.search("x", limit=3)) == 3


def test_where_fragment_that_writes_is_refused(db, photo_folder):
    db.load(photo_folder)
    with pytest.raises(QueryError, match="read-only"):
        db.search("x", where="id = nextval('clipsql.images_id_seq')")


def test_min_score_and_limits(db, photo_folder):
    db.load(photo_folder)
    top = db.search("red", limit=12)
    cut = top[5].score
    hits = db.search("red", limit=12, min_score=cut)
    assert all(h.score >= cut - 1e-3 for h in hits) and len(hits) >= 5
    with pytest.raises(QueryError):
        db.search("red", limit=0)


def test_search_before_load_is_a_clear_error(db):
    with pytest.raises(EmptyCollectionError, match="clipsql load"):
        db.search("a dog")


def test_other_model_on_the_same_collection_is_refused(dsn, tiny_model, other_tiny_model, photo_folder):
    import clipsql

    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
    with pytest.raises(ModelMismatchError, match="embedded with"):
        with clipsql.connect(dsn, model=other_tiny_model) as other:
            other.search("a dog")


def test_filter_keeping_one_percent_of_100k_rows_returns_full_top_k(dsn):
    """Generated vectors, so no model: the filtered query must still return k exact hits."""
    import clipsql
    from clipsql.database import binding, hnsw
    from clipsql.query import search

    rng = np.random.default_rng(0)
    n, dim = 100_000, 32
    with clipsql.connect(dsn) as db:
        binding.bind_model(db.conn, {"arch": "synthetic", "pretrained": "none", "dim": dim})
        centers = rng.normal(size=(50, dim))
        vecs = centers[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, dim))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        insert_vectors(db.conn, vecs,
                       camera_make="CASE WHEN i %% 100 = 0 THEN 'Rare' ELSE 'Common' END")
        hnsw.ensure_index(db.conn)
        db.conn.execute("ANALYZE clipsql.images")
        query = vecs[7] + 0.1 * rng.normal(size=dim)
        query /= np.linalg.norm(query)
        exact = search.rank(db.conn, query, where="camera_make = %s", params=["Rare"], limit=10,
                            strategy="exact")
        for strategy in ("auto", "index"):
            hits = search.rank(db.conn, query, where="camera_make = %s", params=["Rare"], limit=10,
                               strategy=strategy)
            assert len(hits) == 10 and all(h.camera_make == "Rare" for h in hits)
            assert len({h.id for h in hits} & {h.id for h in exact}) >= 9
