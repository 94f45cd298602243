"""SQLAlchemy 2.0, sync and async engines: the app's own models joined with clipsql.Image."""

import asyncio

import numpy as np
import pytest
from sqlalchemy import Float, ForeignKey, Integer, String, create_engine, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    foreign,
    mapped_column,
    relationship,
    selectinload,
)

import clipsql.sqlalchemy as cs
from clipsql.sqlalchemy import Image, clip_image, clip_text
from tests.integration.gallery_app import analyze, brute_force, generate_collection, make_photos


class Base(DeclarativeBase):
    pass


class Product(Base):
    """The app's own table; its photo is a clipsql image, related by path (no FK needed)."""

    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String)
    price: Mapped[float] = mapped_column(Float(53))
    photo_path: Mapped[str | None] = mapped_column(String, index=True)
    image: Mapped[Image | None] = relationship(
        Image, primaryjoin=lambda: foreign(Product.photo_path) == Image.path)


class Review(Base):
    """Another app table, related to an image by id."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    image_id: Mapped[int] = mapped_column(Integer)
    image: Mapped[Image] = relationship(
        Image, primaryjoin=lambda: foreign(Review.image_id) == Image.id, viewonly=True)


def sa_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def configured(monkeypatch):
    """Leaves clipsql.sqlalchemy unconfigured after the test, closing what it opened."""
    cs.close()
    yield cs
    cs.close()


@pytest.fixture
def engine(dsn):
    engine = create_engine(sa_url(dsn))
    yield engine
    engine.dispose()


@pytest.fixture
def shop(db, engine, tmp_path):
    """Photos loaded by clipsql; the app's tables created by the app's own create_all."""
    db.load(make_photos(tmp_path / "shop", 30))
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        paths = session.scalars(select(Image.path).order_by(Image.path)).all()
        session.add_all(Product(name=f"product-{i:05d}", price=float((i * 37) % 100) + 0.5,
                                photo_path=p) for i, p in enumerate(paths))
        session.add(Product(name="no photo", price=1.0, photo_path="/nowhere/missing.jpg"))
        session.commit()
    return db


def shop_query(query_text="a red bicycle", max_price=50, k=10):
    q = clip_text(query_text)
    return (select(Product.name, Image.path, Image.similarity(q).label("score"))
            .join(Image, Image.path == Product.photo_path)
            .where(Product.price < max_price)
            .order_by(Image.embedding.cosine_distance(clip_text(query_text)))
            .limit(k)), q


def test_create_all_of_the_app_never_creates_clipsql_tables(empty_dsn):
    """On a database clipsql never touched (``dsn`` would already hold its schema)."""
    engine = create_engine(sa_url(empty_dsn))
    try:
        Base.metadata.create_all(engine)
        with engine.connect() as conn:
            schemas = conn.scalars(text("SELECT nspname FROM pg_namespace")).all()
            tables = conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
    finally:
        engine.dispose()
    assert "clipsql" not in schemas
    assert sorted(tables) == ["products", "reviews"]


def test_sync_join_filter_rank_matches_brute_force(shop, engine, configured, tiny_model, encodes):
    configured.configure(engine, model=tiny_model)
    stmt, q = shop_query()
    with Session(engine) as session:
        rows = session.execute(stmt).all()
    assert encodes == [["a red bicycle"]]  # the same text in the score and in ORDER BY: once
    query = q.clause.value
    assert len(rows) == 10
    assert [r.name for r in rows] == brute_force(shop.conn, query, 50, 10)
    emb = np.stack([shop.embed_image(r.path) for r in rows])
    q16 = query.astype(np.float16).astype(np.float32)
    expected = emb @ q16 / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q16))
    assert np.allclose([r.score for r in rows], expected, atol=2e-3)
    assert all(a >= b for a, b in zip([r.score for r in rows], [r.score for r in rows][1:]))


def test_async_engine_join_filter_rank_matches_brute_force(shop, dsn, configured, tiny_model):
    async def main():
        engine = create_async_engine(sa_url(dsn))
        try:
            configured.configure(engine, model=tiny_model)
            stmt, q = shop_query("a green lamp", max_price=70, k=10)
            async with AsyncSession(engine) as session:
                rows = (await session.execute(stmt)).all()
                first = rows[0].path
                image_id = await session.scalar(select(Image.id).where(Image.path == first))
                like_first = (await session.execute(
                    select(Product.name)
                    .join(Image, Image.path == Product.photo_path)
                    .where(Image.id != image_id)
                    .order_by(Image.embedding.cosine_distance(clip_image(image_id)))
                    .limit(3))).scalars().all()
                iterative = await session.scalar(text("SHOW hnsw.iterative_scan"))
            return rows, q.clause.value, image_id, like_first, iterative
        finally:
            await engine.dispose()

    rows, query, image_id, like_first, iterative = asyncio.run(main())
    assert [r.name for r in rows] == brute_force(shop.conn, query, 70, 10)
    stored = shop.embed_image(image_id)
    assert like_first == [n for n in brute_force(shop.conn, stored, 1000, 4)
                          if n != rows[0].name][:3]
    assert iterative == "strict_order"


def test_relationships_to_image_by_path_and_by_id(shop, engine):
    with Session(engine) as session:
        cheap = session.scalars(select(Product).where(Product.price < 5)
                                .options(selectinload(Product.image))
                                .order_by(Product.name)).all()
        assert [p.image.path if p.image else None for p in cheap] == \
               [p.photo_path if p.name != "no photo" else None for p in cheap]
        pngs = session.scalars(select(Product.name).where(Product.image.has(Image.format == "PNG"))).all()
        assert len(pngs) == 30  # every photo is a PNG; the product without a photo is left out
        img = session.scalars(select(Image).order_by(Image.id.desc()).limit(1)).one()
        product = Product(name="new", price=3.0)
        product.image = img  # the relationship fills in photo_path
        review = Review(image_id=img.id)
        session.add(product)
        session.flush()
        review.product_id = product.id
        session.add(review)
        session.flush()
        session.expire_all()
        assert session.get(Product, product.id).photo_path == img.path
        assert session.get(Review, review.id).image.path == img.path


def test_similarity_of_loaded_rows_agrees_with_sql(shop, engine, configured, tiny_model):
    from sqlalchemy.orm import undefer

    configured.configure(shop)
    q = shop.embed_text("a blue cup")
    with Session(engine) as session:
        img, score = session.execute(
            select(Image, Image.similarity(clip_text("a blue cup")))
            .options(undefer(Image.embedding)).limit(1)).one()
    assert img.similarity(q.astype(np.float16)) == pytest.approx(score, abs=1e-3)


def test_typed_sql_functions_from_the_orm(shop, engine):
    shop.embed_text("two dogs in snow")  # stored for clipsql.text_embedding
    with Session(engine) as session:
        stored = session.scalar(select(func.clipsql.text_embedding("two dogs in snow")))
        assert np.allclose(np.asarray(stored), shop.embed_text("two dogs in snow"), atol=1e-3)
        target = session.scalar(select(Product).where(Product.name == "product-00003"))
        image_id = session.scalar(select(Image.id).where(Image.path == target.photo_path))
        sim = cs.similar_images(image_id, 5, name="sim")
        names = session.execute(select(Product.name, sim.c.score)
                                .join(sim, sim.c.path == Product.photo_path)
                                .order_by(sim.c.score.desc())).all()
    expected = [n for n in brute_force(shop.conn, shop.embed_image(image_id), 1000, 6)
                if n != "product-00003"][:5]
    assert [n for n, _ in names] == expected
    assert isinstance(names[0].score, float)


def test_hnsw_index_is_used_for_the_orm_order_by_limit(db, dsn, engine, configured):
    generate_collection(db, 5000)
    Base.metadata.create_all(engine)
    db.conn.execute("INSERT INTO products (name, price, photo_path) SELECT 'p' || i, (i * 37) % 100, "
                    "'/gen/' || lpad(i::text, 6, '0') || '.jpg' FROM generate_series(0, 4999, 3) i")
    analyze(db.conn)
    configured.configure(db)  # an open Collection: its query service
    configured.install_search_settings(engine)
    sent = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement, parameters))

    plain = select(Image.id).order_by(Image.embedding.cosine_distance(clip_text("a red bicycle"))).limit(10)
    filtered, _ = shop_query("a red bicycle", max_price=20, k=10)
    with engine.connect() as conn:
        ids = conn.scalars(plain).all()
        rows = conn.execute(filtered).all()
        plans = ["\n".join(conn.exec_driver_sql("EXPLAIN " + s, p).scalars()) for s, p in sent[:1]]
    assert len(ids) == 10
    assert "Index Scan using images_embedding_hnsw" in plans[0], plans[0]
    query = db.embed_text("a red bicycle")
    assert len(set(ids) & set(brute_force_ids(db.conn, query, 10))) >= 9  # HNSW is approximate
    assert len(rows) == 10  # the filtered join still returns the full top-k
    assert len({r.name for r in rows} & set(brute_force(db.conn, query, 20, 10))) >= 9


def brute_force_ids(conn, query, k):
    rows = conn.execute("SELECT id, embedding FROM clipsql.images").fetchall()
    emb = np.stack([e.to_numpy().astype(np.float32) for _, e in rows])
    q = query.astype(np.float16).astype(np.float32)
    scores = emb @ q / np.linalg.norm(emb, axis=1)
    return [rows[i][0] for i in np.argsort(-scores, kind="stable")[:k]]


def test_alembic_autogenerate_leaves_clipsql_alone(shop, engine):
    pytest.importorskip("alembic")
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def diff(**hooks):
        with engine.connect() as conn:
            mc = MigrationContext.configure(conn, opts={"include_schemas": True, **hooks})
            return compare_metadata(mc, Base.metadata)

    unfiltered = diff()
    assert any(op[0] == "remove_table" and op[1].schema == "clipsql" for op in unfiltered)
    assert diff(include_name=cs.include_name, include_object=cs.include_object) == []
