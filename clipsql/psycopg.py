"""psycopg 3 integration: pgvector types on your connection, and query embeddings to bind.

:func:`text_query` embeds a text with the collection's model (the one recorded in
``clipsql.model``; cached in memory and in ``clipsql.text_embeddings``) and returns a
``pgvector.HalfVector`` to pass as a query parameter, so CLIP ranking joins your own tables::

    import psycopg, clipsql.psycopg

    with psycopg.connect(url) as conn:
        clipsql.psycopg.register(conn)
        q = clipsql.psycopg.text_query(conn, "a red bicycle")
        rows = conn.execute(
            "SELECT p.name, i.path FROM products p JOIN clipsql.images i ON i.path = p.photo_path "
            "WHERE p.price < %s ORDER BY i.embedding <=> %s LIMIT 10", (50, q)).fetchall()

Several weighted parts at once: :func:`combined_query`. Async connections: ``await
register_async(aconn)`` and ``await text_query_async(aconn, text)``.
"""

from __future__ import annotations

import os
import threading
import weakref

from clipsql.database import binding
from clipsql.errors import QueryError
from clipsql.query.settings import SESSION_SQL

_settings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_models: dict = {}
_models_lock = threading.Lock()


def register(conn, model=None, device: str | None = None) -> None:
    """Register pgvector's types (vector, halfvec, sparsevec) on a sync psycopg connection,
    and turn on pgvector's iterative index scans for the session (:data:`clipsql.query.settings.SESSION_SQL`).

    ``model`` (an ``ARCH/PRETRAINED`` spec or a :class:`~clipsql.models.openclip.ClipModel`) is only
    needed when the collection's local checkpoint has moved; by default the query helpers use
    the model the collection was loaded with (``clipsql.model.spec``).
    """
    from pgvector.psycopg import register_vector

    register_vector(conn)
    with conn.transaction():  # committed now unless the caller has a transaction open
        conn.execute(SESSION_SQL)
    _settings[conn] = (model, device)


async def register_async(conn, model=None, device: str | None = None) -> None:
    """Register pgvector's types on an async psycopg connection (see :func:`register`)."""
    from pgvector.psycopg import register_vector_async

    await register_vector_async(conn)
    async with conn.transaction():
        await conn.execute(SESSION_SQL)
    _settings[conn] = (model, device)


def model_for(bound_row, model=None, device: str | None = None):
    """The :class:`~clipsql.models.openclip.ClipModel` to embed queries with (loaded once per
    process). ``bound_row`` is the row of ``binding.BOUND_SQL``."""
    from clipsql import config
    from clipsql.models.openclip import ClipModel

    if isinstance(model, ClipModel):
        return model
    spec = config.model_spec(model) or binding.usable_spec(binding.bound_from_row(bound_row))
    key = (spec, config.device(device))
    with _models_lock:
        if key not in _models:
            _models[key] = ClipModel(spec, device=device)
        return _models[key]


def text_query(conn, text: str, model=None):
    """The embedding of ``text`` by the collection's model, as a ``pgvector.HalfVector``."""
    from pgvector import HalfVector

    from clipsql.query import text_cache as textcache

    textcache.check_text(text)
    chosen, device = _settings.get(conn, (None, None))
    m = model_for(conn.execute(binding.BOUND_SQL).fetchone(), model or chosen, device)
    return HalfVector(textcache.embed(conn, m, text))


async def text_query_async(conn, text: str, model=None):
    """:func:`text_query` for an async psycopg connection."""
    from pgvector import HalfVector

    from clipsql.query import text_cache as textcache

    textcache.check_text(text)
    chosen, device = _settings.get(conn, (None, None))
    bound = await (await conn.execute(binding.BOUND_SQL)).fetchone()
    m = model_for(bound, model or chosen, device)
    return HalfVector(await textcache.embed_async(conn, m, text))


def combined_query(conn, parts, model=None):
    """A weighted query of several parts (:mod:`clipsql.query.algebra`: texts, stored images
    by id or path, :func:`~clipsql.query.algebra.Not`) as a ``pgvector.HalfVector``.

    >>> q = combined_query(conn, ["a beach", Image(42, weight=0.5), Not("people")])  # doctest: +SKIP
    """
    from pgvector import HalfVector

    from clipsql.query import algebra

    vectors, weights = [], []
    for part in algebra.as_parts(parts):
        if isinstance(part, algebra.Text):
            vectors.append(text_query(conn, part.text, model).to_numpy())
        else:
            if isinstance(part.image, bytes):
                raise QueryError("the psycopg helpers take stored images (a row id or path); "
                                 "embed image files with a clipsql Collection")
            vectors.append(image_query(conn, part.image).to_numpy())
        weights.append(part.weight)
    return HalfVector(algebra.combine(vectors, weights))


def image_query(conn, image):
    """The stored embedding of an image (a row id or a path in ``clipsql.images``), a HalfVector."""
    sql, param = _image_lookup(image)
    row = conn.execute(sql, (param,)).fetchone()
    return _image_result(row, image)


async def image_query_async(conn, image):
    """:func:`image_query` for an async psycopg connection."""
    sql, param = _image_lookup(image)
    row = await (await conn.execute(sql, (param,))).fetchone()
    return _image_result(row, image)


def _image_lookup(image):
    if isinstance(image, bool):
        raise QueryError(f"not an image id or path: {image!r}")
    if isinstance(image, int):
        return "SELECT embedding FROM clipsql.images WHERE id = %s", image
    if isinstance(image, (str, os.PathLike)):
        path = os.path.abspath(os.path.expanduser(os.fspath(image)))
        return "SELECT embedding FROM clipsql.images WHERE path = %s", path
    raise QueryError(f"not an image id or path: {image!r}")


def _image_result(row, image):
    if row is None:
        what = f"id {image}" if isinstance(image, int) else f"path {os.fspath(image)}"
        raise QueryError(f"no image with {what} in clipsql.images")
    return row[0]
