"""The binary-quantized index kind on real PostgreSQL: switching kinds builds one index and
drops the other, searches (Python API and SQL functions) go through the Hamming index, and
with candidates covering the rows their results equal exact search, filters included; a
filter re-ranks fewer candidates, by its selectivity."""

from datetime import datetime, timedelta

import numpy as np
import pytest

from clipsql.database import hnsw
from clipsql.errors import QueryError
from clipsql.query import search

N, DIM, START = 3000, 32, datetime(2020, 1, 1)


def clustered(n, rng):
    g = np.random.default_rng(7)
    basis, _ = np.linalg.qr(g.normal(size=(DIM, 9)))
    centers = g.normal(size=(50, 8)) / np.sqrt(8)
    z = centers[rng.integers(0, 50, n)] + 0.5 * rng.normal(size=(n, 8)) / np.sqrt(8)
    x = 1.1 * basis[:, 0] + z @ basis[:, 1:].T + 0.1 * rng.normal(size=(n, DIM)) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def filled(db):
    rng = np.random.default_rng(0)
    vecs, days = clustered(N, rng), rng.integers(0, 1000, N)
    db.add_embeddings([f"/gen/{i}" for i in range(N)], vecs,
                      {"taken_at": [START + timedelta(days=int(d)) for d in days],
                       "camera_make": ["Canon" if d % 10 == 0 else "Nikon" for d in days]})
    db.conn.execute("ANALYZE clipsql.images")
    return db, clustered(5, rng)


def indexes(conn):
    return {r[0] for r in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'clipsql' "
        "AND indexname LIKE 'images_embedding%'")}


def test_default_kind_is_halfvec_and_switching_builds_and_drops(filled):
    db, _ = filled
    assert hnsw.index_kind(db.conn) == ("halfvec", 100)
    assert indexes(db.conn) == {hnsw.INDEX_NAME}
    assert hnsw.set_index_kind(db.conn, "binary", oversample=100) is True
    assert hnsw.index_kind(db.conn) == ("binary", 100)
    assert indexes(db.conn) == {hnsw.BINARY_INDEX_NAME}
    assert hnsw.set_index_kind(db.conn, "binary") is False  # already there
    assert hnsw.set_index_kind(db.conn, "halfvec") is True
    assert indexes(db.conn) == {hnsw.INDEX_NAME}


def test_bad_kind_or_oversample_is_refused(db):
    with pytest.raises(QueryError, match="unknown index kind"):
        hnsw.set_index_kind(db.conn, "pq")
    with pytest.raises(QueryError, match="oversample"):
        hnsw.set_index_kind(db.conn, "binary", oversample=0)


def test_an_empty_collection_gets_the_binary_index_after_its_first_load(db):
    hnsw.set_index_kind(db.conn, "binary")
    db.add_embeddings(["/a", "/b"], np.eye(2, DIM, dtype=np.float32))
    assert indexes(db.conn) == {hnsw.BINARY_INDEX_NAME}


def _binary_index_scans(conn):
    return conn.execute("SELECT pg_stat_get_xact_numscans(%s::regclass)",
                        [f"clipsql.{hnsw.BINARY_INDEX_NAME}"]).fetchone()[0]


def test_explain_shows_the_binary_index(filled):
    db, queries = filled
    hnsw.set_index_kind(db.conn, "binary")
    plan = search.quantized.plan(db.conn, 10)
    assert plan.candidates == 1000
    from pgvector import HalfVector

    sql = f"EXPLAIN SELECT id FROM clipsql.images ORDER BY {plan.order} LIMIT 400"
    text = "\n".join(r[0] for r in db.conn.execute(sql, [HalfVector(queries[0])]))
    assert f"Index Scan using {hnsw.BINARY_INDEX_NAME}" in text


@pytest.mark.parametrize("where, params", [
    (None, []),
    ("taken_at >= %s", [START + timedelta(days=500)]),
    ("camera_make = %s", ["Canon"]),
])
def test_binary_search_equals_exact_search(filled, where, params):
    db, queries = filled
    hnsw.set_index_kind(db.conn, "binary")  # 1000 candidates of 3000 rows
    for q in queries:
        fast = search.rank(db.conn, q, where=where, params=params, limit=10, strategy="index")
        exact = search.rank(db.conn, q, where=where, params=params, limit=10, strategy="exact")
        assert fast.strategy == "index" and len(fast) == 10
        assert [h.id for h in fast] == [h.id for h in exact]
        assert [h.score for h in fast] == pytest.approx([h.score for h in exact])


def test_sql_functions_use_the_binary_index_and_match_exact(filled):
    db, queries = filled
    hnsw.set_index_kind(db.conn, "binary", oversample=100)
    from pgvector import HalfVector

    conn = db.conn
    for q in queries:
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")  # 3000 rows: make the plan plain
            before = _binary_index_scans(conn)
            got = conn.execute("SELECT id, score FROM clipsql._nearest(%s, 10)",
                               [HalfVector(q)]).fetchall()
            assert _binary_index_scans(conn) > before
        exact = search.rank(conn, q, limit=10, strategy="exact")
        assert [r[0] for r in got] == [h.id for h in exact]
    first = conn.execute("SELECT id FROM clipsql.images ORDER BY id LIMIT 1").fetchone()[0]
    similar = conn.execute("SELECT id FROM clipsql.similar_images(%s, 5)", [first]).fetchall()
    q = conn.execute("SELECT embedding FROM clipsql.images WHERE id = %s", [first]).fetchone()[0]
    exact = search.rank(conn, np.asarray(q.to_list()), limit=6, strategy="exact")
    assert [r[0] for r in similar] == [h.id for h in exact if h.id != first][:5]


def test_duplicates_through_the_binary_index_match_the_halfvec_ones(db):
    rng = np.random.default_rng(3)
    base = clustered(400, rng)
    near = base[:40] + 0.002 * rng.normal(size=(40, DIM)).astype(np.float32)
    db.add_embeddings([f"/d/{i}" for i in range(440)], np.concatenate([base, near]))
    before = sorted(g.ids for g in db.duplicates(threshold=0.999))
    assert len(before) >= 30
    hnsw.set_index_kind(db.conn, "binary")
    after = sorted(g.ids for g in db.duplicates(threshold=0.999))
    assert after == before


def test_a_filter_re_ranks_fewer_candidates(filled, monkeypatch):
    db, queries = filled
    hnsw.set_index_kind(db.conn, "binary")  # 1000 candidates unfiltered
    seen, real = [], search.quantized.for_filter

    def spy(plan, limit, selectivity):
        seen.append((selectivity, real(plan, limit, selectivity).candidates))
        return real(plan, limit, selectivity)

    monkeypatch.setattr(search.quantized, "for_filter", spy)
    for where, params, share in (("taken_at >= %s", [START + timedelta(days=500)], 0.5),
                                 ("camera_make = %s", ["Canon"], 0.1)):
        seen.clear()
        fast = search.rank(db.conn, queries[0], where=where, params=params, limit=10,
                           strategy="index")
        selectivity, candidates = seen[0]
        assert selectivity == pytest.approx(share, abs=0.05)  # the planner's estimate
        assert candidates == max(round(1000 * selectivity ** 0.5), 40 * 10) < 1000
        exact = search.rank(db.conn, queries[0], where=where, params=params, limit=10,
                            strategy="exact")
        assert len(fast) == 10 and len({h.id for h in fast} & {h.id for h in exact}) >= 9
    seen.clear()
    search.rank(db.conn, queries[0], limit=10, strategy="index")
    assert seen == []  # no filter: the unfiltered count, nothing to scale
