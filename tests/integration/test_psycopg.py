"""psycopg 3, sync and async: CLIP ranking joined with the app's own tables."""

import asyncio

import numpy as np
import psycopg
import pytest
from pgvector import HalfVector

import clipsql.psycopg
from clipsql.errors import ModelError, ModelMismatchError, QueryError
from tests.integration.gallery_app import (
    SHOP_SQL,
    analyze,
    brute_force,
    build_shop,
    generate_collection,
    plan_text,
)


@pytest.fixture
def shop(db, tmp_path):
    build_shop(db, tmp_path / "shop")
    return db


def test_sync_join_filter_rank_matches_brute_force(shop, dsn, tiny_model, encodes):
    with psycopg.connect(dsn) as conn:
        clipsql.psycopg.register(conn, model=tiny_model)
        q = clipsql.psycopg.text_query(conn, "a red bicycle")
        rows = conn.execute(SHOP_SQL, (50, q, 10)).fetchall()
        again = clipsql.psycopg.text_query(conn, "a red bicycle")
    assert isinstance(q, HalfVector) and q.to_numpy().shape == (32,)
    assert len(rows) == 10
    assert [name for name, _ in rows] == brute_force(shop.conn, q.to_numpy(), 50, 10)
    assert np.array_equal(again.to_numpy(), q.to_numpy())
    assert encodes == [["a red bicycle"]]  # embedded once, then cached
    stored = shop.conn.execute("SELECT clipsql.text_embedding('a red bicycle')").fetchone()[0]
    assert np.array_equal(stored.to_numpy(), q.to_numpy())


def test_async_join_filter_rank_matches_brute_force(shop, dsn, tiny_model):
    async def main():
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await clipsql.psycopg.register_async(conn, model=tiny_model)
            q = await clipsql.psycopg.text_query_async(conn, "a green lamp")
            cur = await conn.execute(SHOP_SQL, (50, q, 10))
            rows = await cur.fetchall()
            by_image = await clipsql.psycopg.image_query_async(conn, rows[0][1])
            return q, rows, by_image

    q, rows, by_image = asyncio.run(main())
    assert [name for name, _ in rows] == brute_force(shop.conn, q.to_numpy(), 50, 10)
    stored = shop.conn.execute("SELECT embedding FROM clipsql.images WHERE path = %s",
                               (rows[0][1],)).fetchone()[0]
    assert np.array_equal(by_image.to_numpy(), stored.to_numpy())
    assert shop.conn.execute("SELECT count(*) FROM clipsql.text_embeddings WHERE query = %s",
                             ("a green lamp",)).fetchone()[0] == 1


def test_query_by_image_id_and_path(shop, dsn):
    row = shop.conn.execute("SELECT id, path, embedding FROM clipsql.images LIMIT 1").fetchone()
    with psycopg.connect(dsn) as conn:
        clipsql.psycopg.register(conn)
        assert np.array_equal(clipsql.psycopg.image_query(conn, row[0]).to_numpy(), row[2].to_numpy())
        assert np.array_equal(clipsql.psycopg.image_query(conn, row[1]).to_numpy(), row[2].to_numpy())
        with pytest.raises(QueryError, match="no image with id 999999"):
            clipsql.psycopg.image_query(conn, 999999)


def test_read_only_transaction_is_left_intact(shop, dsn, tiny_model):
    with psycopg.connect(dsn) as conn:
        clipsql.psycopg.register(conn, model=tiny_model)
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            q = clipsql.psycopg.text_query(conn, "a query in a read-only transaction")
            rows = conn.execute(SHOP_SQL, (50, q, 3)).fetchall()  # still usable
    assert len(rows) == 3
    assert shop.conn.execute("SELECT count(*) FROM clipsql.text_embeddings").fetchone()[0] == 0


def test_model_defaults_to_the_collections_and_must_match(shop, dsn, other_tiny_model):
    with psycopg.connect(dsn) as conn:
        clipsql.psycopg.register(conn)
        q = clipsql.psycopg.text_query(conn, "a dog")  # the checkpoint the collection recorded
        assert np.allclose(q.to_numpy(), shop.embed_text("a dog"), atol=1e-3)
        conn.execute("UPDATE clipsql.model SET spec = 'clipsql-tiny/moved/away.pt'")
        with pytest.raises(ModelError, match="which is gone"):
            clipsql.psycopg.text_query(conn, "a cat")
        with pytest.raises(ModelMismatchError, match="embedded with"):
            clipsql.psycopg.text_query(conn, "a dog", model=other_tiny_model)
        with pytest.raises(QueryError, match="empty"):
            clipsql.psycopg.text_query(conn, "   ")


def test_hnsw_index_serves_order_by_limit_and_filtered_join_gets_full_top_k(db, dsn):
    vecs = generate_collection(db, 5000)
    # Every third image is a product; prices spread so that `price < 20` keeps ~1 in 15 rows.
    db.conn.execute("CREATE TABLE products (id serial PRIMARY KEY, name text NOT NULL, "
                    "price double precision NOT NULL, photo_path text)")
    db.conn.execute("CREATE INDEX ON products (photo_path)")
    db.conn.execute("INSERT INTO products (name, price, photo_path) SELECT 'p' || i, (i * 37) % 100, "
                    "'/gen/' || lpad(i::text, 6, '0') || '.jpg' FROM generate_series(0, 4999, 3) i")
    analyze(db.conn)
    q = HalfVector(vecs[11] + 0.05)
    exact = brute_force(db.conn, q.to_numpy(), 20, 10)
    with psycopg.connect(dsn) as conn:
        clipsql.psycopg.register(conn)
        assert conn.execute("SHOW hnsw.iterative_scan").fetchone()[0] == "strict_order"
        plain = "SELECT id FROM clipsql.images ORDER BY embedding <=> %s LIMIT 10"
        assert "Index Scan using images_embedding_hnsw" in plan_text(conn, plain, (q,))
        rows = conn.execute(SHOP_SQL, (20, q, 10)).fetchall()  # whatever plan the planner picks
        assert [name for name, _ in rows] == exact
        # The index-driven plan for the filtered join (what the planner picks on larger tables
        # or looser filters; forced here by disabling seq scans) must not starve the top-k.
        conn.execute("SET enable_seqscan = off")
        assert "Index Scan using images_embedding_hnsw" in plan_text(conn, SHOP_SQL, (20, q, 10))
        via_index = conn.execute(SHOP_SQL, (20, q, 10)).fetchall()
        conn.execute("SET hnsw.iterative_scan = off")
        conn.execute("SET hnsw.ef_search = 40")
        starved = conn.execute(SHOP_SQL, (20, q, 10)).fetchall()
    assert len(via_index) == 10
    assert len({name for name, _ in via_index} & set(exact)) >= 9
    # Why register() turns on iterative scans: a plain HNSW scan stops after ef_search rows,
    # most of which the join filter drops.
    assert len(starved) < 10
