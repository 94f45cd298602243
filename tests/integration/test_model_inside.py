"""Any text from plain SQL: the in-database model (clipsql_native, clipsql/database/native/).

A client that knows nothing of clipsql (psycopg without pgvector's types, like psql or a BI
tool) searches by a text nobody embedded before; the server embeds it in its inference
worker with the collection's bound model and gives the vector the Python API gives.
"""

import json

import numpy as np
import psycopg
import pytest

from clipsql.database import embedded, native
from tests.integration.gallery_app import make_photos


def sql_client(dsn):
    return psycopg.connect(dsn, autocommit=True)


def vector(text_value: str) -> np.ndarray:
    return np.array(json.loads(text_value), dtype=np.float32)


@pytest.fixture
def inside(db, dsn, tmp_path):
    """A loaded collection whose database has the in-database model installed."""
    db.load(make_photos(tmp_path / "photos", 24))
    with sql_client(dsn) as conn:
        major = conn.execute("SELECT current_setting('server_version_num')::int / 10000"
                             ).fetchone()[0]
        pg_config = embedded.pg_config_for_version(major)
        if pg_config is None or major < 17:
            pytest.skip(f"no PGXS for PostgreSQL {major} here (the module needs 17+)")
        assert native.ensure(conn, pg_config) == native.IN_DATABASE
    return db


def test_a_new_text_from_plain_sql_is_the_python_vector_and_ranks_the_same(inside, dsn):
    text = "two dogs playing in the snow"
    with sql_client(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM clipsql.text_embeddings WHERE query = %s",
                            (text,)).fetchone()[0] == 0
        got = vector(conn.execute("SELECT clipsql.text_embedding(%s)::text", (text,)
                                  ).fetchone()[0])
        rows = conn.execute("SELECT id, path, score FROM clipsql.search(%s, 10)", (text,)
                            ).fetchall()
        # the worker kept it in the one text cache
        assert conn.execute("SELECT count(*) FROM clipsql.text_embeddings WHERE query = %s",
                            (text,)).fetchone()[0] == 1
        ordered = [r[0] for r in conn.execute(
            "SELECT id FROM clipsql.images ORDER BY embedding <=> clipsql.text_embedding(%s), id "
            "LIMIT 10", ("a red bicycle leaning on a wall",))]
    want = inside.embed_text(text)
    cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine >= 0.999
    hits = inside.search(text, limit=10)
    assert [r[0] for r in rows] == [h.id for h in hits]
    assert np.allclose([r[2] for r in rows], [h.score for h in hits], atol=2e-3)
    assert ordered == [h.id for h in inside.search("a red bicycle leaning on a wall", limit=10)]


def test_every_language_and_a_join_with_a_filter_is_the_exact_filtered_top_k(inside, dsn):
    text = "雪の中で遊ぶ2匹の犬"
    with sql_client(dsn) as conn:
        conn.execute("CREATE TABLE products (id serial PRIMARY KEY, price numeric, photo text)")
        conn.execute("INSERT INTO products (price, photo) "
                     "SELECT (id * 37) % 100, path FROM clipsql.images")
        rows = conn.execute(
            "SELECT p.id, i.id FROM products p JOIN clipsql.images i ON i.path = p.photo "
            "WHERE p.price < 50 AND i.width > 0 "
            "ORDER BY i.embedding <=> clipsql.text_embedding(%s), i.id LIMIT 5", (text,)
        ).fetchall()
        table = conn.execute("SELECT i.id, i.embedding::text, (i.id * 37) % 100 < 50 "
                             "FROM clipsql.images i").fetchall()
    q = inside.embed_text(text).astype(np.float16).astype(np.float32)
    allowed = [(i, vector(e)) for i, e, ok in table if ok]
    scores = {i: float(e @ q / (np.linalg.norm(e) * np.linalg.norm(q))) for i, e in allowed}
    expected = sorted(scores, key=lambda i: (-scores[i], i))[:5]
    assert [r[1] for r in rows] == expected


def test_labels_typed_in_sql_give_the_probabilities_of_classify(inside, dsn):
    labels = ["a cat", "a dog", "a red car"]
    with sql_client(dsn) as conn:
        image_id = conn.execute("SELECT min(id) FROM clipsql.images").fetchone()[0]
        rows = conn.execute("SELECT label, probability FROM clipsql.label_probabilities("
                            "clipsql.image_embedding(%s), %s::text[])", (image_id, labels)).fetchall()
        best = conn.execute("SELECT id, score FROM clipsql.label_images(%s, %s::text[], 30)",
                            (rows[0][0], labels)).fetchall()
    result = {r.id: r for r in inside.classify(labels, top=None)}
    want = dict(result[image_id].labels)
    assert {label for label, _ in rows} == set(labels)
    for label, probability in rows:
        assert probability == pytest.approx(want[label], abs=2e-3)
    assert image_id in [b[0] for b in best]
    assert all(a[1] >= b[1] for a, b in zip(best, best[1:]))


def test_hostile_calls_are_bounded_and_clear(inside, dsn):
    with sql_client(dsn) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="clipsql.max_text_bytes"):
            conn.execute("SELECT clipsql.text_embedding(repeat('x', 100000))")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="empty"):
            conn.execute("SELECT clipsql_native.embed('')")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="not one of the labels"):
            conn.execute("SELECT * FROM clipsql.label_images('cat', ARRAY['dog'])")
        # a role that may not write the cache still searches; nothing is stored for it
        conn.execute("CREATE ROLE reader_only")
        conn.execute("GRANT USAGE ON SCHEMA clipsql TO reader_only")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA clipsql TO reader_only")
        conn.execute("SET ROLE reader_only")
        n = conn.execute("SELECT count(*) FROM clipsql.search('a quiet harbour at dawn', 3)"
                         ).fetchone()[0]
        conn.execute("RESET ROLE")
        assert n == 3
        assert conn.execute("SELECT count(*) FROM clipsql.text_embeddings "
                            "WHERE query = 'a quiet harbour at dawn'").fetchone()[0] == 0
        # one worker for the database, however many texts and connections
        workers = conn.execute("SELECT count(*) FROM clipsql_native.workers() WHERE database = "
                               "(SELECT oid FROM pg_database WHERE datname = current_database())"
                               ).fetchone()[0]
    assert workers == 1
    assert native.mode(psycopg.connect(dsn, autocommit=True))["mode"] == native.IN_DATABASE


def test_many_connections_share_one_worker(inside, dsn):
    import threading

    errors, vectors = [], {}

    def ask(i):
        try:
            with sql_client(dsn) as conn:
                vectors[i] = vector(conn.execute(
                    "SELECT clipsql.text_embedding(%s)::text", (f"photo number {i % 4}",)
                ).fetchone()[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, str(errors[0])
    for i in range(12):
        assert np.allclose(vectors[i], vectors[i % 4], atol=1e-3)
    with sql_client(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM clipsql_native.workers()").fetchone()[0] >= 1
        assert conn.execute("SELECT count(*) FROM pg_stat_activity "
                            "WHERE backend_type = 'clipsql inference'").fetchone()[0] == 1


def test_the_sql_page_examples_run_as_written(inside, dsn):
    """docs/sql.md's first block, statement by statement, on a collection nobody embedded
    those texts for."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "sql.md").read_text(encoding="utf-8")
    block = re.search(r"```sql\n(.*?)```", page, re.S).group(1)
    statements = [s.strip() for s in block.split(";") if s.strip()]
    statements = ["\n".join(line for line in s.splitlines() if not line.lstrip().startswith("--"))
                  for s in statements]
    with sql_client(dsn) as conn:
        results = [conn.execute(s).fetchall() for s in statements]
    assert [len(r) for r in results][:3] == [10, 5, 3] and len(results[3]) <= 5
    assert all(0 <= p <= 1 for _, p in results[2])
