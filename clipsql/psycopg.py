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

import threading
import weakref

from clipsql.errors import QueryError
from clipsql.query.settings import SESSION_SQL
from clipsql.service import QueryService

_settings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_services: dict = {}
_services_lock = threading.Lock()


def register(conn, model=None, device: str | None = None) -> None:
    """Register pgvector's types (vector, halfvec, sparsevec) on a sync psycopg connection,
    and turn on pgvector's iterative index scans for the session (:data:`clipsql.query.settings.SESSION_SQL`).

    ``model`` (an ``ARCH/PRETRAINED`` spec) is only needed when the collection's local
    checkpoint has moved; by default the query helpers use the model the collection holds
    (``clipsql.model.spec``), and follow it when a reembed switches models.
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


def service_for(conn, model=None) -> QueryService:
    """The :class:`~clipsql.service.QueryService` the helpers use on ``conn``: one per process
    for each model request and device (its models load once), shared by every connection."""
    from clipsql import config

    chosen, device = _settings.get(conn, (None, None))
    key = (config.model_spec(model or chosen), config.device(device))
    with _services_lock:
        if key not in _services:
            _services[key] = QueryService(key[0], device=device)
        return _services[key]


def text_query(conn, text: str, model=None):
    """The embedding of ``text`` by the collection's model, as a ``pgvector.HalfVector``."""
    from pgvector import HalfVector

    return HalfVector(service_for(conn, model).embed_text(conn, text))


async def text_query_async(conn, text: str, model=None):
    """:func:`text_query` for an async psycopg connection."""
    from pgvector import HalfVector

    return HalfVector(await service_for(conn, model).embed_text_async(conn, text))


def combined_query(conn, parts, model=None):
    """A weighted query of several parts (:mod:`clipsql.query.algebra`: texts, stored images
    by id or key, :func:`~clipsql.query.algebra.Not`) as a ``pgvector.HalfVector``.

    >>> q = combined_query(conn, ["a beach", Image(42, weight=0.5), Not("people")])  # doctest: +SKIP
    """
    from pgvector import HalfVector

    from clipsql.query import algebra

    parts = algebra.as_parts(parts)
    if any(isinstance(p, algebra.Image) and isinstance(p.image, bytes) for p in parts):
        raise QueryError("the psycopg helpers take stored images (a row id or key); "
                         "embed image files with a clipsql Collection")
    service = service_for(conn, model)
    stored = [algebra.Image(service.stored_embedding(conn, p.image), p.weight)
              if isinstance(p, algebra.Image) else p for p in parts]
    vectors = [(p.image, p.weight) for p in stored if isinstance(p, algebra.Image)]
    texts = [p for p in stored if isinstance(p, algebra.Text)]
    return HalfVector(service.embed_query(conn, texts or None, vectors=vectors))


def image_query(conn, image):
    """The stored embedding of an image (a row id or a key in ``clipsql.images``), a HalfVector."""
    from pgvector import HalfVector

    return HalfVector(service_for(conn).stored_embedding(conn, image))


async def image_query_async(conn, image):
    """:func:`image_query` for an async psycopg connection."""
    from pgvector import HalfVector

    return HalfVector(await service_for(conn).stored_embedding_async(conn, image))


def text_in_image(conn, text: str, k: int = 10, where: str | None = None, params=()):
    """The images (and video moments) whose words read by OCR (``clipsql ocr``) hold every
    word of ``text``, best first: search hits with ``ocr_text``, under an optional filter
    (:func:`clipsql.ocr.search.text_in_image`; no model needed)."""
    from clipsql.ocr import search as words

    return words.text_in_image(conn, text, k, where=where, params=params)
