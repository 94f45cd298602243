"""Query algebra, relevance cutoffs and ordering, against a numpy reference on real rows
(precomputed embeddings imported with metadata), under SQL filters too."""

from datetime import datetime, timedelta

import numpy as np
import pytest

import clipsql
from clipsql.errors import QueryError

N = 300


@pytest.fixture
def rows(db):
    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(N, db.model.dim)).astype(np.float32)
    taken = [datetime(2020, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 1500, N)]
    makes = [["Canon", "Nikon", None][i % 3] for i in range(N)]
    db.add_embeddings([f"p{i}" for i in range(N)], vecs,
                      {"taken_at": taken, "camera_make": makes}, build_index=False)
    got = db.conn.execute("SELECT id, path, embedding, taken_at, camera_make FROM clipsql.images "
                          "ORDER BY id").fetchall()
    ids = np.array([r[0] for r in got])
    emb = np.stack([r[2].to_numpy().astype(np.float64) for r in got])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return db, ids, emb, [r[3] for r in got], [r[4] for r in got]


def normalize(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def reference(emb, ids, q, keep=None, limit=10, exclude=None):
    scores = emb @ normalize(q)
    mask = np.ones(len(ids), bool) if keep is None else np.asarray(keep)
    if exclude is not None:
        mask &= ids != exclude
    order = [i for i in np.argsort(-scores, kind="stable") if mask[i]]
    return [int(ids[i]) for i in order[:limit]], scores


def test_weighted_parts_with_negatives_match_numpy(rows):
    db, ids, emb, _, _ = rows
    text = db.embed_text("a beach at sunset")
    parts = ["a beach at sunset", clipsql.Image(int(ids[3]), weight=0.5),
             clipsql.Not(int(ids[10]), weight=0.8)]
    q = normalize(text) + 0.5 * emb[3] - 0.8 * emb[10]
    expected, scores = reference(emb, ids, q)
    hits = db.search(parts, strategy="exact")
    assert [h.id for h in hits] == expected
    assert np.allclose([h.score for h in hits], scores[np.searchsorted(ids, expected)], atol=2e-3)
    assert np.allclose(db.embed_query(parts), normalize(q), atol=2e-3)


def test_algebra_under_a_filter_and_the_legacy_image_argument(rows):
    db, ids, emb, taken, makes = rows
    keep = [t >= datetime(2022, 1, 1) and m == "Canon" for t, m in zip(taken, makes)]
    q = normalize(db.embed_text("snow")) + normalize(emb[5])
    expected, _ = reference(emb, ids, q, keep)
    hits = db.search("snow", image=int(ids[5]), where="taken_at >= %s AND camera_make = %s",
                     params=[datetime(2022, 1, 1), "Canon"])
    assert [h.id for h in hits] == expected


def test_one_image_is_left_out_of_its_own_results(rows):
    db, ids, emb, _, _ = rows
    expected, _ = reference(emb, ids, emb[8], exclude=ids[8])
    assert [h.id for h in db.search([clipsql.Image(int(ids[8]))], strategy="exact")] == expected
    assert [h.id for h in db.similar(int(ids[8]), strategy="exact")] == expected


def test_parts_that_cancel_and_bad_weights_are_readable_errors(rows):
    db, ids, _, _, _ = rows
    with pytest.raises(QueryError, match="cancel"):
        db.search([clipsql.Image(int(ids[1])), clipsql.Not(int(ids[1]))])
    with pytest.raises(QueryError, match="weight"):
        db.search([clipsql.Text("x", weight=float("nan"))])
    with pytest.raises(QueryError, match="query part"):
        db.search([3.5])


@pytest.mark.parametrize("rule", [{"within": 0.05}, {"adaptive": "zscore"}, {"adaptive": "gap"},
                                  {"min_score": 0.1}])
def test_cutoffs_match_numpy_and_say_where_they_cut(rows, rule):
    from tests.ranking_reference import Cutoff

    db, ids, emb, _, _ = rows
    q = emb[20] + 0.3 * emb[21]
    _, scores = reference(emb, ids, q)
    best = np.sort(scores)[::-1][:200]
    parts = [clipsql.Image(int(ids[20])), clipsql.Image(int(ids[21]), weight=0.3)]
    hits = db.search(parts, limit=200, strategy="exact", **rule)
    keep, report = Cutoff(**rule).apply(best)
    assert len(hits) == keep
    assert np.allclose([h.score for h in hits], best[:keep], atol=2e-3)
    assert report["rule"] in (list(rule)[0], rule.get("adaptive"))
    # min_score is applied in SQL already: its candidates are the rows that reach it
    same = ("rule", "kept") if "min_score" in rule else ("rule", "kept", "candidates")
    assert {k: hits.cutoff[k] for k in same} == {k: report[k] for k in same}
    assert hits.cutoff["threshold"] == pytest.approx(report["threshold"], abs=2e-3)
    if "within" in rule:
        assert all(h.score >= hits[0].score - 0.05 - 1e-3 for h in hits)


def test_order_by_orders_the_relevant_set(rows):
    db, ids, emb, taken, makes = rows
    keep = [m == "Nikon" for m in makes]
    _, scores = reference(emb, ids, emb[30])
    cand = [i for i in np.argsort(-scores, kind="stable") if keep[i]][:50]
    best = scores[cand[0]]
    relevant = [i for i in cand if scores[i] >= best - 0.2]
    expected = sorted(relevant, key=lambda i: taken[i], reverse=True)[:10]
    hits = db.search([clipsql.Image(int(ids[30]), weight=2.0)], where="camera_make = 'Nikon'",
                     within=0.2, order_by="taken_at desc", candidates=50, strategy="exact")
    assert [h.id for h in hits] == [int(ids[i]) for i in expected]
    assert [h.taken_at for h in hits] == sorted((h.taken_at for h in hits), reverse=True)
    with pytest.raises(QueryError, match="order_by"):
        db.search("x", order_by="taken_at; DROP TABLE clipsql.images")


def test_sql_combine_matches_the_python_algebra(rows):
    db, ids, emb, _, _ = rows
    db.store_texts(["a beach"])
    parts = ["a beach", clipsql.Image(int(ids[3]), weight=0.5), clipsql.Not(int(ids[10]))]
    sql = db.conn.execute(
        "SELECT clipsql.combine(ARRAY[clipsql.text_embedding('a beach'), "
        "clipsql.image_embedding(%s::bigint), clipsql.image_embedding(%s::bigint)], "
        "ARRAY[1, 0.5, -1])", (int(ids[3]), int(ids[10]))).fetchone()[0]
    assert np.allclose(sql.to_numpy(), db.embed_query(parts), atol=2e-3)
    ranked = [r[0] for r in db.conn.execute(
        "SELECT id FROM clipsql.images ORDER BY (embedding <=> %s) + 0, id LIMIT 10", (sql,))]
    assert ranked == [h.id for h in db.search(parts, strategy="exact")]
    import psycopg

    with pytest.raises(psycopg.errors.InvalidParameterValue, match="cancel"):
        db.conn.execute("SELECT clipsql.combine(ARRAY[clipsql.image_embedding(1::bigint), "
                        "clipsql.image_embedding(1::bigint)], ARRAY[1, -1])")


def test_psycopg_and_sqlalchemy_helpers_give_the_same_query(rows, dsn, monkeypatch):
    import psycopg
    from sqlalchemy import create_engine, select

    import clipsql.psycopg
    import clipsql.sqlalchemy as cs

    db, ids, _, _, _ = rows
    parts = ["snow", clipsql.Image(int(ids[2]), weight=0.7), clipsql.Not("people", weight=0.4)]
    expected = [h.id for h in db.search(parts, where="camera_make = 'Canon'", strategy="exact")]
    with psycopg.connect(dsn) as conn:
        clipsql.psycopg.register(conn)
        q = clipsql.psycopg.combined_query(conn, parts)
        got = [r[0] for r in conn.execute(
            "SELECT id FROM clipsql.images WHERE camera_make = 'Canon' "
            "ORDER BY (embedding <=> %s) + 0, id LIMIT 10", (q,))]
    assert got == expected
    cs.close()
    cs.configure(db)
    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    q = cs.clip_query(parts)
    stmt = (select(cs.Image.id).where(cs.Image.camera_make == "Canon")
            .order_by(cs.Image.embedding.cosine_distance(q) + 0, cs.Image.id).limit(10))
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(stmt)] == expected
    engine.dispose()
    cs.close()


def test_cli_algebra_cutoff_and_order(rows, dsn, tiny_model):
    import json

    from click.testing import CliRunner

    from clipsql.cli import main

    db, ids, _, _, _ = rows
    parts = ["a beach", clipsql.Image(int(ids[4]), weight=0.5), clipsql.Not("people", weight=0.5)]
    expected = db.search(parts, within=0.3, order_by="taken_at desc", limit=5)
    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    out = CliRunner().invoke(main, ["search", "a beach", "--image", str(ids[4]), "--image-weight",
                                    "0.5", "--minus", "people", "--minus-weight", "0.5",
                                    "--within", "0.3", "--order-by", "taken_at desc",
                                    "--limit", "5", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert [h["id"] for h in json.loads(out.stdout)] == [h.id for h in expected]
    human = CliRunner().invoke(main, ["search", "a beach", "--within", "0.01"], env=env)
    assert "cut by --within" in human.stderr
    bad = CliRunner().invoke(main, ["search", "--minus", "people"], env=env)
    assert bad.exit_code == 2 and "QUERY or an --image" in bad.output


def test_relevant_set_in_sql_and_sqlalchemy_ordered_by_a_column(rows, dsn):
    from pgvector import HalfVector
    from sqlalchemy import create_engine, select

    import clipsql.sqlalchemy as cs

    db, ids, emb, taken, _ = rows
    parts = [clipsql.Image(int(ids[40])), clipsql.Image(int(ids[41]))]
    q = emb[40] + emb[41]
    _, scores = reference(emb, ids, q)
    top = np.argsort(-scores, kind="stable")[:60]
    relevant = [i for i in top if scores[i] >= scores[top[0]] - 0.4]
    expected = [int(ids[i]) for i in sorted(relevant, key=lambda i: (-taken[i].timestamp(),
                                                                     -scores[i]))][:10]
    vector = db.embed_query(parts)
    got = [r[0] for r in db.conn.execute(
        "SELECT i.id FROM clipsql.relevant_images(%s, within => 0.4, candidates => 60) r "
        "JOIN clipsql.images i USING (id) ORDER BY i.taken_at DESC, r.score DESC LIMIT 10",
        (HalfVector(vector),))]
    assert got == expected
    assert 3 < len(relevant) < 60, "the rule must keep several and cut the rest"
    library = db.search(parts, within=0.4, candidates=60, order_by="taken_at desc",
                        strategy="exact")
    assert [h.id for h in library] == expected
    rel = cs.relevant_images(vector, within=0.4, candidates=60)
    stmt = (select(cs.Image.id).join(rel, rel.c.id == cs.Image.id)
            .order_by(cs.Image.taken_at.desc(), rel.c.score.desc()).limit(10))
    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(stmt)] == expected
    engine.dispose()
    cs.close()
