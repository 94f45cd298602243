"""Filtered search on 30k imported rows: per-query plan choice, recall against exact search,
the full top-k at every selectivity, and the naive plan's failure it fixes. The plan is SQL's
(``clipsql.rank_images``, migrations/0020_one_home.sql), reached here from the Python API and
from SQL."""

from datetime import datetime, timedelta

import numpy as np
import psycopg
import pytest
from pgvector import HalfVector

from clipsql.query import search

N, DIM, START = 30_000, 32, datetime(2020, 1, 1)
CUTS = {"100%": None, "50%": 500, "10%": 900, "1%": 990, "0.1%": 999}


def clustered(n, rng):
    """A shared mean direction plus clusters in an 8-d subspace plus small noise (CLIP-like)."""
    g = np.random.default_rng(7)
    basis, _ = np.linalg.qr(g.normal(size=(DIM, 9)))
    centers = g.normal(size=(100, 8)) / np.sqrt(8)
    z = centers[rng.integers(0, 100, n)] + 0.5 * rng.normal(size=(n, 8)) / np.sqrt(8)
    x = 1.1 * basis[:, 0] + z @ basis[:, 1:].T + 0.1 * rng.normal(size=(n, DIM)) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def big(pg_admin_url, tiny_model):
    """One 30k-row collection shared by this module's tests (read-only), dropped after."""
    import uuid

    import psycopg

    from tests.conftest import _with_database

    name = f"clipsql_scale_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield from _filled(_with_database(pg_admin_url, name), tiny_model)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _filled(url, tiny_model):
    import clipsql

    rng = np.random.default_rng(0)
    vecs, days = clustered(N, rng), rng.integers(0, 1000, N)
    with clipsql.connect(url, model=tiny_model) as db:
        db.add_embeddings([f"/gen/{i}" for i in range(N)], vecs,
                          {"taken_at": [START + timedelta(days=int(d)) for d in days]})
        db.conn.execute("ANALYZE clipsql.images")
        yield db, vecs.astype(np.float16).astype(np.float32), days, clustered(20, rng)


def truth(vecs, days, q, cut):
    mask = days >= cut if cut else np.ones(len(days), bool)
    ids = np.arange(1, len(days) + 1)[mask]
    return set(ids[np.argsort(-(vecs[mask] @ q.astype(np.float16).astype(np.float32)))[:10]].tolist())


@pytest.mark.parametrize("label", CUTS)
def test_recall_and_full_top_k_at_every_selectivity(big, label):
    db, vecs, days, queries = big
    cut = CUTS[label]
    where, params = ("taken_at >= %s", [START + timedelta(days=cut)]) if cut else (None, [])
    recall, plans = 0.0, set()
    for q in queries:
        hits = search.rank(db.conn, q, where=where, params=params, limit=10)
        assert len(hits) == 10
        plans.add(hits.strategy)
        recall += len(truth(vecs, days, q, cut) & {h.id for h in hits}) / 10 / len(queries)
    assert recall >= 0.95
    # 30k rows: exact below sqrt(4 * 200 * 30k) ~ 4.9k estimated rows (10% = 3000)
    assert plans == ({"index"} if label in ("100%", "50%") else {"exact"})
    # the same plan and rows from SQL
    literal = psycopg.ClientCursor(db.conn).mogrify(where, params) if where else None
    got = db.conn.execute("SELECT id, plan FROM clipsql.rank_images(%s, 10, %s)",
                          [HalfVector(queries[0]), literal]).fetchall()
    assert {r[1] for r in got} == plans
    assert [r[0] for r in got] == [h.id for h in search.rank(db.conn, queries[0], where=where,
                                                             params=params, limit=10)]


def test_naive_index_plan_starves_a_selective_filter(big):
    """The baseline this module fixes: plain HNSW + WHERE returns far fewer than k rows."""
    db, _, _, queries = big
    with db.conn.transaction():
        for s in ("hnsw.iterative_scan = off", "hnsw.ef_search = 40", "enable_seqscan = off",
                  "enable_bitmapscan = off", "enable_sort = off"):
            db.conn.execute(f"SET LOCAL {s}")
        from pgvector import HalfVector

        got = db.conn.execute("SELECT id FROM clipsql.images WHERE taken_at >= %s "
                              "ORDER BY embedding <=> %s LIMIT 10",
                              (START + timedelta(days=990), HalfVector(queries[0]))).fetchall()
    assert len(got) < 10


def test_underestimated_selectivity_is_completed_by_the_exact_scan(big):
    db, vecs, _, queries = big
    # The planner guesses a third of the rows for this (an index scan); it keeps 5, fewer
    # than asked for: the index scan comes back short and an exact scan completes it.
    where = "(id %% 6000) < 1"
    ids = np.arange(1, N + 1)
    keep = ids % 6000 < 1
    q = queries[0].astype(np.float16).astype(np.float32)
    best = ids[keep][np.argsort(-(vecs[keep] @ q))[:10]].tolist()
    assert len(best) == 5
    hits = search.rank(db.conn, queries[0], where=where, limit=10)
    assert hits.strategy == "index+exact" and [h.id for h in hits] == best
    got = db.conn.execute("SELECT id, plan FROM clipsql.rank_images(%s, 10, %s)",
                          [HalfVector(queries[0]), where.replace("%%", "%")]).fetchall()
    assert [r[0] for r in got] == best and {r[1] for r in got} == {"index+exact"}


def test_exact_threshold_grows_with_the_table(big):
    conn = big[0].conn

    def threshold(total, k=10):
        return conn.execute("SELECT clipsql._exact_threshold(%s, %s)", [total, k]).fetchone()[0]

    assert threshold(0) == 2000
    # an HNSW scan of ef = 200 candidates against an exact scan of the filter's rows
    assert threshold(1e6) == pytest.approx((4.0 * 200 * 1e6) ** 0.5)
    assert threshold(1e6, k=1000) > threshold(1e6)
    # the plan of the test above reads it: 30k rows, ~4.9k
    assert threshold(N) == pytest.approx((4.0 * 200 * N) ** 0.5)
