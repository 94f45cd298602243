"""The SQL that clipsql.sqlalchemy generates, compiled for PostgreSQL (no database, no model)."""

import re

import numpy as np
import pytest
from sqlalchemy import Column, Float, Integer, MetaData, Table, Text, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, mapped_column

from clipsql import sqlalchemy as cs
from clipsql.errors import ConfigError, QueryError
from clipsql.sqlalchemy import Image, clip_image, query_vector

DIALECT = postgresql.psycopg.dialect()


def sql(stmt) -> str:
    return re.sub(r"\s+", " ", str(stmt.compile(dialect=DIALECT))).strip()


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    price: Mapped[float]
    photo_path: Mapped[str]


def test_image_is_mapped_on_its_own_metadata_in_schema_clipsql():
    assert Image.__table__.schema == "clipsql" and Image.__table__.name == "images"
    assert Image.metadata is not Base.metadata
    assert "clipsql.images" not in Base.metadata.tables
    assert str(Image.__table__.c.embedding.type) == "HALFVEC"


def test_query_vector_is_a_halfvec_cast_bind_parameter():
    q = query_vector(np.array([0.5, -0.75], dtype=np.float32))
    compiled = select(q).compile(dialect=DIALECT)
    assert sql(select(q)) == "SELECT CAST(%(query_vector_1)s AS HALFVEC) AS anon_1"
    # pgvector's own HALFVEC bind processor turns the array into halfvec text.
    processor = Image.__table__.c.embedding.type.bind_processor(DIALECT)
    assert processor(compiled.params["query_vector_1"]) == "[0.5,-0.75]"


def test_join_filter_rank_statement():
    q = query_vector(np.ones(4, dtype=np.float32))
    stmt = (select(Product.name, Image.path, Image.similarity(q).label("score"))
            .join(Image, Image.path == Product.photo_path)
            .where(Product.price < 50)
            .order_by(Image.embedding.cosine_distance(q))
            .limit(10))
    assert sql(stmt) == (
        "SELECT products.name, clipsql.images.path, "
        "1 - (clipsql.images.embedding <=> CAST(%(query_vector_1)s AS HALFVEC)) AS score "
        "FROM products JOIN clipsql.images ON clipsql.images.path = products.photo_path "
        "WHERE products.price < %(price_1)s::INTEGER "
        "ORDER BY clipsql.images.embedding <=> CAST(%(query_vector_1)s AS HALFVEC) "
        "LIMIT %(param_1)s::INTEGER")


def test_similarity_accepts_raw_vectors_and_works_on_aliases():
    other = aliased(Image, name="other")
    stmt = select(other.id).order_by(other.similarity([1.0, 0.0]).desc())
    assert sql(stmt) == (
        "SELECT other.id FROM clipsql.images AS other ORDER BY 1 - (other.embedding <=> "
        "CAST(%(query_vector_1)s AS HALFVEC)) DESC")
    assert Image.similarity([1.0, 0.0]).type._type_affinity is Float


def test_similarity_of_a_loaded_row_in_python():
    row = Image(id=1, path="/a.jpg")
    row.embedding = np.array([1.0, 0.0], dtype=np.float32)
    assert row.similarity([1.0, 1.0]) == pytest.approx(np.sqrt(0.5))


def test_clip_image_by_id_is_pure_sql():
    stmt = select(Image.id).order_by(Image.embedding.cosine_distance(clip_image(42))).limit(5)
    assert sql(stmt) == (
        "SELECT clipsql.images.id FROM clipsql.images ORDER BY clipsql.images.embedding <=> "
        "clipsql.image_embedding(%(clip_image_id_1)s::BIGINT) LIMIT %(param_1)s::INTEGER")


def test_typed_sql_functions():
    assert str(func.clipsql.text_embedding("x").type) == "HALFVEC"
    assert str(func.clipsql.image_embedding(3).type) == "HALFVEC"
    stmt = select(Image.path).order_by(
        Image.embedding.cosine_distance(func.clipsql.text_embedding("two dogs in snow"))).limit(3)
    assert sql(stmt) == (
        "SELECT clipsql.images.path FROM clipsql.images ORDER BY clipsql.images.embedding <=> "
        "clipsql.text_embedding(%(text_embedding_1)s::VARCHAR) LIMIT %(param_1)s::INTEGER")


def test_similar_images_is_a_typed_table_valued_function():
    sim = cs.similar_images(42, 5, name="sim")
    assert [c.name for c in sim.c] == ["id", "path", "score"]
    assert sim.c.score.type._type_affinity is Float
    stmt = select(Product.name, sim.c.score).join(sim, sim.c.path == Product.photo_path)
    assert sql(stmt) == (
        "SELECT products.name, sim.score FROM products JOIN clipsql.similar_images("
        "%(similar_images_1)s::INTEGER, %(similar_images_2)s::INTEGER) AS sim "
        "ON sim.path = products.photo_path")
    found = cs.search_images("red", 3, name="s")
    assert sql(select(found.c.id)) == (
        "SELECT s.id FROM clipsql.search_images(%(search_images_1)s::VARCHAR, "
        "%(search_images_2)s::INTEGER) AS s")


def test_bad_query_values_are_readable_errors():
    with pytest.raises(QueryError):
        query_vector("not a vector")
    with pytest.raises(QueryError):
        query_vector(np.array([np.nan, 1.0]))
    with pytest.raises(QueryError):
        clip_image(3.5)
    with pytest.raises(QueryError):
        clip_image(True)


def test_clip_text_before_configure_says_what_to_do():
    cs.close()  # nothing configured
    with pytest.raises(ConfigError, match="configure"):
        cs.clip_text("a red bicycle")


def test_libpq_url_from_sqlalchemy_urls():
    from sqlalchemy import create_engine

    engine = create_engine("postgresql+psycopg://u:pw@db.example.com:5433/shop", module=None)
    assert cs._libpq_url(engine) == "postgresql://u:pw@db.example.com:5433/shop"
    assert cs._libpq_url("postgresql+psycopg://u@/shop?host=/tmp/s") == "postgresql://u@/shop?host=%2Ftmp%2Fs"
    assert cs._libpq_url("dbname=shop") == "dbname=shop"
    with pytest.raises(ConfigError):
        cs._libpq_url(42)


def test_alembic_hooks_skip_schema_clipsql():
    user = Table("products", MetaData(), Column("id", Integer, primary_key=True), Column("n", Text))
    assert cs.include_name("clipsql", "schema", {}) is False
    assert cs.include_name("public", "schema", {}) is True
    assert cs.include_name("images", "table", {"schema_name": "clipsql"}) is False
    assert cs.include_name("products", "table", {"schema_name": None}) is True
    assert cs.include_object(Image.__table__, "images", "table", False, None) is False
    assert cs.include_object(Image.__table__.c.path, "path", "column", False, None) is False
    assert cs.include_object(user, "products", "table", False, None) is True
    assert cs.include_object(user.c.n, "n", "column", False, None) is True
