"""Plain SQL (migration 0002): functions any client can call, with no Python in the query path."""

import json

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from clipsql.cli import main
from tests.integration.gallery_app import generate_collection, make_photos, plan_text


def sql_client(dsn):
    """A client that knows nothing of clipsql or pgvector (like psql or a BI tool)."""
    return psycopg.connect(dsn, autocommit=True)


def exact_ids(db, query, k, exclude=None):
    rows = db.conn.execute("SELECT id, embedding FROM clipsql.images").fetchall()
    emb = np.stack([e.to_numpy().astype(np.float32) for _, e in rows])
    q = np.asarray(query, dtype=np.float16).astype(np.float32)
    scores = emb @ q / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    ids = [rows[i][0] for i in np.argsort(-scores, kind="stable")]
    return [i for i in ids if i != exclude][:k]


@pytest.fixture
def gallery(db, tmp_path):
    db.load(make_photos(tmp_path / "photos", 30))
    return db


def test_embed_text_then_search_from_plain_sql(gallery, dsn, tiny_model):
    runner = CliRunner()
    args = ["embed-text", "two dogs in snow", "a red bicycle", "--db", dsn, "--model", tiny_model]
    first = runner.invoke(main, [*args, "--json"])
    assert first.exit_code == 0, first.output
    assert [(d["query"], d["new"], d["dim"]) for d in json.loads(first.stdout)] == \
        [("two dogs in snow", True, 32), ("a red bicycle", True, 32)]
    again = runner.invoke(main, args)
    assert again.exit_code == 0 and "already stored: two dogs in snow" in again.stdout
    with sql_client(dsn) as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM clipsql.images "
            "ORDER BY embedding <=> clipsql.text_embedding('two dogs in snow') LIMIT 5")]
        found = conn.execute("SELECT id, path, score FROM clipsql.search_images('two dogs in snow', 5)"
                             ).fetchall()
    hits = gallery.search("two dogs in snow", limit=5)
    assert ids == [h.id for h in hits] == [r[0] for r in found]
    assert np.allclose([r[2] for r in found], [h.score for h in hits], atol=2e-3)
    assert ids == exact_ids(gallery, gallery.embed_text("two dogs in snow"), 5)


def test_text_embedding_is_null_safe_and_explains_a_missing_text(gallery, dsn):
    with sql_client(dsn) as conn:
        assert conn.execute("SELECT clipsql.text_embedding(NULL)").fetchone()[0] is None
        with pytest.raises(psycopg.errors.NoDataFound) as err:
            conn.execute("SELECT clipsql.text_embedding('it''s a cat')")
    # a server without the in-database model (tests/integration/test_model_inside.py has it)
    assert err.value.diag.message_primary == ("clipsql: the text query 'it''s a cat' has not "
                                              "been embedded yet, and this server has no "
                                              "in-database model")
    assert "clipsql embed-text 'it'\\''s a cat'" in err.value.diag.message_hint
    assert "clipsql status" in err.value.diag.message_hint


def test_python_searches_are_saved_for_sql(gallery, dsn):
    gallery.search("a yellow kite", limit=3)
    with sql_client(dsn) as conn:
        row = conn.execute("SELECT embedding::text FROM clipsql.text_embeddings "
                           "WHERE query = 'a yellow kite'").fetchone()
    stored = np.array(json.loads(row[0]), dtype=np.float32)
    assert np.allclose(stored, gallery.embed_text("a yellow kite"), atol=1e-3)


def test_similar_images_excludes_itself_and_matches_brute_force(gallery, dsn):
    target = gallery.conn.execute("SELECT id FROM clipsql.images ORDER BY path LIMIT 1 OFFSET 4"
                                  ).fetchone()[0]
    with sql_client(dsn) as conn:
        rows = conn.execute("SELECT id, path, score FROM clipsql.similar_images(%s, 5)",
                            (target,)).fetchall()
        by_path = conn.execute(
            "SELECT id FROM clipsql.images WHERE id <> %s ORDER BY embedding <=> "
            "clipsql.image_embedding((SELECT path FROM clipsql.images WHERE id = %s)) LIMIT 5",
            (target, target)).fetchall()
        default_k = conn.execute("SELECT count(*) FROM clipsql.similar_images(%s)", (target,)).fetchone()
    assert [r[0] for r in rows] == exact_ids(gallery, gallery.embed_image(target), 5, exclude=target)
    assert [r[0] for r in by_path] == [r[0] for r in rows]
    assert [h.id for h in gallery.similar(target, limit=5)] == [r[0] for r in rows]
    assert all(a[2] >= b[2] for a, b in zip(rows, rows[1:])) and default_k[0] == 10


@pytest.mark.parametrize("sql, error, message", [
    ("SELECT * FROM clipsql.similar_images(987654, 5)", psycopg.errors.NoDataFound,
     "no image with id 987654"),
    ("SELECT * FROM clipsql.similar_images(1, 0)", psycopg.errors.InvalidParameterValue,
     "k must be a positive integer, not 0"),
    ("SELECT * FROM clipsql.similar_images(1, NULL)", psycopg.errors.InvalidParameterValue,
     "not NULL"),
    ("SELECT clipsql.image_embedding('/not/loaded.jpg')", psycopg.errors.NoDataFound,
     "no image with path '/not/loaded.jpg'"),
])
def test_bad_arguments_are_one_clear_error(gallery, dsn, sql, error, message):
    with sql_client(dsn) as conn:
        with pytest.raises(error, match=message):
            conn.execute(sql)
        assert conn.execute("SELECT count(*) FROM clipsql.similar_images(NULL, 3)").fetchone()[0] == 0


def test_embed_text_before_any_load_is_a_clear_error(db, dsn, tiny_model):
    result = CliRunner().invoke(main, ["embed-text", "a dog", "--db", dsn, "--model", tiny_model])
    assert result.exit_code == 1
    assert "clipsql load" in result.output and "Traceback" not in result.output


def test_binding_a_model_empties_the_text_cache(db, dsn, tmp_path):
    db.conn.execute("INSERT INTO clipsql.text_embeddings (query, embedding) "
                    "VALUES ('stale', '[1,0,0]')")
    db.load(make_photos(tmp_path / "p", 2))
    assert db.conn.execute("SELECT count(*) FROM clipsql.text_embeddings").fetchone()[0] == 0


def test_hnsw_index_serves_the_sql_functions(db, dsn):
    vecs = generate_collection(db, 5000)
    db.conn.execute("ANALYZE clipsql.images")
    db.embed_text("a red bicycle")
    with sql_client(dsn) as conn:
        plan = plan_text(conn, "SELECT id FROM clipsql.images ORDER BY embedding <=> "
                               "clipsql.text_embedding('a red bicycle') LIMIT 10")
        assert "Index Scan using images_embedding_hnsw" in plan
        before = _index_scans(conn)
        rows = conn.execute("SELECT id FROM clipsql.similar_images(7, 150)").fetchall()
        assert _index_scans(conn) > before  # the function ranked through the index
        assert conn.execute("SHOW hnsw.ef_search").fetchone()[0] == "40"  # restored
        big = conn.execute("SELECT id FROM clipsql.similar_images(7, 1200)").fetchall()
    assert len(rows) == 150 and 7 not in {r[0] for r in rows}
    exact = exact_ids(db, vecs[6], 150, exclude=7)  # generated row i has id i + 1
    assert len({r[0] for r in rows} & set(exact)) >= 140
    assert [r[0] for r in big] == exact_ids(db, db.embed_image(7), 1200, exclude=7)


def _index_scans(conn) -> int:
    conn.execute("SELECT pg_stat_force_next_flush()")
    return conn.execute("SELECT idx_scan FROM pg_stat_user_indexes "
                        "WHERE indexrelname = 'images_embedding_hnsw'").fetchone()[0]
