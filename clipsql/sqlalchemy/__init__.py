"""SQLAlchemy 2.0 integration: the ``Image`` mapped class and CLIP query expressions.

``Image`` maps ``clipsql.images`` on clipsql's own ``MetaData``, so your ``create_all`` never
creates clipsql's tables. ``clip_text`` / ``clip_image`` are SQL expressions whose value is a
query embedding computed in Python with the collection's model, bound as a ``halfvec``
parameter: the same statement runs on sync and async engines, and ``ORDER BY embedding <=>
param LIMIT k`` can use the HNSW index. Call :func:`configure` once (at startup) so they know
the collection::

    from sqlalchemy import select
    from clipsql.sqlalchemy import Image, clip_text, configure

    configure(engine)                       # sync or async engine, a URL, or a Collection
    q = clip_text("a red bicycle")          # embedded once, cached in memory and in the DB
    stmt = (select(Product.name, Image.path, Image.similarity(q).label("score"))
            .join(Image, Image.path == Product.photo_path)
            .where(Product.price < 50)
            .order_by(Image.embedding.cosine_distance(q))
            .limit(10))
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from pgvector.sqlalchemy import HALFVEC
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Double,
    Float,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    bindparam,
    cast,
    literal_column,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.hybrid import hybrid_method
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred
from sqlalchemy.sql.elements import ColumnElement

from clipsql.database import images
from clipsql.errors import ConfigError, QueryError
from clipsql.sqlalchemy.alembic import include_name, include_object
from clipsql.sqlalchemy.functions import (
    relevant_images,
    search_images,
    similar_images,
    text_in_image,
)

SCHEMA = images.SCHEMA

__all__ = ["Image", "ClipsqlBase", "clip_text", "clip_image", "clip_query", "query_vector", "configure",
           "close", "install_search_settings",
           "similar_images", "search_images", "relevant_images", "text_in_image", "include_name", "include_object", "SCHEMA"]


class ClipsqlBase(DeclarativeBase):
    """clipsql's own declarative base: its ``metadata`` is not yours, so ``create_all`` on
    your ``Base.metadata`` never touches the ``clipsql`` schema."""

    metadata = MetaData(schema=SCHEMA)


_SQL_TYPES = {"bigint": BigInteger, "text": Text, "integer": Integer, "smallint": SmallInteger,
              "double precision": Double, "jsonb": JSONB,
              "timestamp with time zone": lambda: DateTime(timezone=True),
              "timestamp without time zone": lambda: DateTime(timezone=False),
              "halfvec": HALFVEC}


def _images_table() -> Table:
    """``clipsql.images`` from its one definition, :mod:`clipsql.database.images`."""
    columns = [Column(c.name, _SQL_TYPES[c.sql](), nullable=c.nullable, doc=c.doc,
                      primary_key=c.name == "id", unique=c.name == "path")
               for c in images.COLUMNS]
    return Table("images", ClipsqlBase.metadata, *columns)


class Image(ClipsqlBase):
    """A row of ``clipsql.images`` (written by ``clipsql load``; read it, join it, filter it).

    The columns are those of :data:`clipsql.database.images.COLUMNS`. ``embedding`` is
    deferred (not loaded with the row); ``undefer(Image.embedding)`` loads it.

    >>> from sqlalchemy import select
    >>> " ".join(str(select(Image.path).where(Image.camera_make == "Canon")).split())
    'SELECT clipsql.images.path FROM clipsql.images WHERE clipsql.images.camera_make = :camera_make_1'
    """

    __table__ = _images_table()
    __mapper_args__ = {"properties": {"embedding": deferred(__table__.c.embedding)}}

    if TYPE_CHECKING:  # what type checkers see; the mapping above is what runs
        id: Mapped[int]
        path: Mapped[str]
        sha256: Mapped[str | None]
        bytes: Mapped[int | None]
        mtime: Mapped[datetime | None]
        width: Mapped[int | None]
        height: Mapped[int | None]
        format: Mapped[str | None]
        orientation: Mapped[int | None]
        taken_at: Mapped[datetime | None]
        camera_make: Mapped[str | None]
        camera_model: Mapped[str | None]
        latitude: Mapped[float | None]
        longitude: Mapped[float | None]
        exif: Mapped[dict | None]
        added_at: Mapped[datetime]
        updated_at: Mapped[datetime]
        start_s: Mapped[float | None]
        end_s: Mapped[float | None]
        embedding: Mapped[object]

    @hybrid_method
    def similarity(self, query) -> float:
        """Cosine similarity (higher is better) of this loaded row to a query vector."""
        a = _as_array(self.embedding)
        b = _as_array(query)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    @similarity.inplace.expression
    @classmethod
    def _similarity_expression(cls, query) -> ColumnElement[float]:
        """``1 - (embedding <=> query)``: cosine similarity in SQL, higher is better."""
        return literal_column("1", Float) - cls.embedding.cosine_distance(query_vector(query))

    def __repr__(self) -> str:
        return f"Image(id={self.id!r}, path={self.path!r})"


def _as_array(value) -> np.ndarray:
    if isinstance(value, ColumnElement):
        raise QueryError("similarity() of a loaded Image needs a vector, not a SQL expression")
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


# --- the collection whose model embeds queries --------------------------------------------

#: Connections clipsql keeps to the configured database for the query embeddings (the model
#: check and the text cache); the application's own engine is never used for them.
CONNECTIONS = 4
_state: dict = {"service": None, "pool": None}
_state_lock = threading.Lock()


def configure(target=None, *, model: str | None = None, device: str | None = None):
    """Tell ``clip_text`` / ``clip_image`` which collection (database and model) to use.

    ``target`` is a SQLAlchemy ``Engine`` or ``AsyncEngine`` (its URL is used; clipsql opens
    a small pool of its own psycopg connections for the model check and the query cache),
    a URL, an open :class:`~clipsql.collection.Collection` (its query service, with
    connections of clipsql's own to its database), or None for ``$CLIPSQL_DATABASE_URL`` /
    the embedded server. An engine also gets :func:`install_search_settings`. Returns the
    :class:`~clipsql.service.QueryService` the expressions use (thread-safe).
    """
    from clipsql.collection import Collection
    from clipsql.database import connection
    from clipsql.service import QueryService

    if hasattr(target, "pool") or hasattr(target, "sync_engine"):
        install_search_settings(target)
    if isinstance(target, Collection):
        service, dsn = target.service, target.dsn
    else:
        dsn = connection.resolve_dsn(_libpq_url(target))
        connection.connect_ready(dsn).close()  # pgvector and the migrations, once
        service = QueryService(model, device=device)
    pool = connection.pool(dsn, CONNECTIONS, wait_s=10.0, name="clipsql-sqlalchemy")
    with _state_lock:
        previous = _state["pool"]
        _state.update(service=service, pool=pool)
    if previous is not None:
        previous.close()
    return service


def close() -> None:
    """Forget the configured collection and close clipsql's own connections (shutdown)."""
    with _state_lock:
        pool = _state["pool"]
        _state.update(service=None, pool=None)
    if pool is not None:
        pool.close()


def install_search_settings(engine) -> None:
    """Turn on pgvector's iterative index scans on every connection of ``engine`` (sync or
    async), so a filtered or joined ``ORDER BY ... LIMIT k`` still returns k rows.

    Applied once per database connection, at its next checkout from the pool, so connections
    the engine already holds get it too. ``configure(engine)`` calls this.
    """
    from sqlalchemy import event

    sync_engine = getattr(engine, "sync_engine", engine)
    if not event.contains(sync_engine.pool, "checkout", _on_checkout):
        event.listen(sync_engine.pool, "checkout", _on_checkout)


def _on_checkout(dbapi_connection, record, _proxy) -> None:
    if record.info.get("clipsql_search_settings"):
        return
    from clipsql.query.settings import SESSION_SQL

    # Outside any transaction, or the pool's rollback-on-return would undo the SET.
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    cursor = dbapi_connection.cursor()
    cursor.execute(SESSION_SQL)
    cursor.close()
    dbapi_connection.autocommit = autocommit
    record.info["clipsql_search_settings"] = True


def _libpq_url(target) -> str | None:
    """A psycopg URL from an engine, a SQLAlchemy URL or a string (``+driver`` removed)."""
    if target is None:
        return None
    url = getattr(target, "url", target)
    if isinstance(url, str):
        if "://" not in url:
            return url
        from sqlalchemy.engine import make_url

        url = make_url(url)
    try:
        return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)
    except AttributeError:
        raise ConfigError(
            f"configure() needs an engine, a URL or a Collection, not {target!r}") from None


def _embedded(call):
    """``call(service, conn)`` with the configured service and one of its connections."""
    service, pool = _state["service"], _state["pool"]
    if service is None:
        raise ConfigError("clip_text()/clip_image() need the collection's model: call "
                          "clipsql.sqlalchemy.configure(engine) once at startup")
    with pool.connection() as conn:
        return call(service, conn)


# --- query expressions --------------------------------------------------------------------

def query_vector(value, name: str = "query_vector") -> ColumnElement:
    """A vector (numpy array, list, HalfVector) as a ``halfvec`` bound parameter.

    SQL expressions (``clip_text(...)``, ``func.clipsql.text_embedding(...)``) pass through.
    """
    if isinstance(value, ColumnElement):
        return value
    try:
        raw = value.to_numpy() if hasattr(value, "to_numpy") else value
        vec = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError):
        raise QueryError(f"not a query vector: {value!r}") from None
    if vec.ndim != 1 or vec.size == 0 or not np.all(np.isfinite(vec)):
        raise QueryError(
            f"a query vector must be a non-empty finite 1-d array, not shape {vec.shape}")
    return cast(bindparam(name, value=vec, type_=HALFVEC(), unique=True), HALFVEC())


def clip_text(text: str) -> ColumnElement:
    """The embedding of ``text`` by the collection's model, as a ``halfvec`` SQL expression.

    Embedded when called (once per text per process: see :mod:`clipsql.query.text_cache`).
    """
    return query_vector(_embedded(lambda s, c: s.embed_text(c, text)), "clip_text")


def clip_query(parts) -> ColumnElement:
    """A query of several weighted parts (texts, images, ``clipsql.Not(...)``; see
    :mod:`clipsql.query.algebra`) as a ``halfvec`` SQL expression, embedded when called."""
    return query_vector(_embedded(lambda s, c: s.embed_query(c, parts)), "clip_query")


def clip_image(image) -> ColumnElement:
    """An image's embedding as a ``halfvec`` SQL expression.

    An ``int`` is a row id, looked up in SQL (``clipsql.image_embedding(id)``; no model and no
    :func:`configure` needed, and an unknown id is a SQL error). A path is looked up in
    ``clipsql.images`` (as given, then made absolute) by the configured service, or
    embedded from the file if absent.
    """
    from sqlalchemy import func

    if isinstance(image, bool) or not isinstance(image, (int, np.integer, str, os.PathLike)):
        raise QueryError(f"clip_image() takes an image id or a path, not {image!r}")
    if isinstance(image, (int, np.integer)):
        return func.clipsql.image_embedding(bindparam("clip_image_id", int(image), BigInteger,
                                                      unique=True))
    return query_vector(_embedded(lambda s, c: s.embed_image(c, image)), "clip_image")
