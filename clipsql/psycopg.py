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

Async connections: ``await register_async(aconn)`` and ``await text_query_async(aconn, text)``.
"""

from __future__ import annotations

import os
import threading
import weakref

from .errors import EmptyCollectionError, ModelError, QueryError

_settings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_models: dict = {}
_models_lock = threading.Lock()
_BOUND = "SELECT arch, pretrained, dim, spec FROM clipsql.model"

#: For the session, the same as clipsql's own search (``clipsql.search``): with pgvector 0.8+,
#: an HNSW scan whose rows are filtered out (a WHERE, or a join on your own tables) keeps
#: scanning, in exact distance order, until LIMIT is filled; without it a filtered
#: ``ORDER BY embedding <=> q LIMIT k`` can return fewer than k rows. A larger candidate
#: list (``hnsw.ef_search``) than pgvector's default 40 raises recall.
SEARCH_SETTINGS_SQL = (
    "SELECT set_config('hnsw.iterative_scan', 'strict_order', false), "
    "set_config('hnsw.ef_search', '100', false) FROM pg_extension "
    "WHERE extname = 'vector' AND string_to_array(extversion, '.')::int[] >= '{0,8}'")


def register(conn, model=None, device: str | None = None) -> None:
    """Register pgvector's types (vector, halfvec, sparsevec) on a sync psycopg connection,
    and turn on pgvector's iterative index scans for the session (see ``SEARCH_SETTINGS_SQL``).

    ``model`` (an ``ARCH/PRETRAINED`` spec or a :class:`~clipsql.model.ClipModel`) is only
    needed when the collection's local checkpoint has moved; by default the query helpers use
    the model the collection was loaded with (``clipsql.model.spec``).
    """
    from pgvector.psycopg import register_vector

    register_vector(conn)
    with conn.transaction():  # committed now unless the caller has a transaction open
        conn.execute(SEARCH_SETTINGS_SQL)
    _settings[conn] = (model, device)


async def register_async(conn, model=None, device: str | None = None) -> None:
    """Register pgvector's types on an async psycopg connection (see :func:`register`)."""
    from pgvector.psycopg import register_vector_async

    await register_vector_async(conn)
    async with conn.transaction():
        await conn.execute(SEARCH_SETTINGS_SQL)
    _settings[conn] = (model, device)


def model_for(bound_row, model=None, device: str | None = None):
    """The :class:`~clipsql.model.ClipModel` to embed queries with (loaded once per process)."""
    from . import config
    from .model import ClipModel

    if isinstance(model, ClipModel):
        return model
    spec = config.model_spec(model)
    if spec is None:
        if bound_row is None:
            raise EmptyCollectionError("the collection is empty: run `clipsql load FOLDER` first")
        arch, pretrained, spec = bound_row[0], bound_row[1], bound_row[3]
        path = spec.partition("/")[2]
        if pretrained.startswith("file:") and not os.path.isfile(path):
            raise ModelError(
                f"this collection was embedded with the checkpoint {path}, which is gone; "
                f"pass model='{arch}/PATH' to a copy (or set {config.ENV_MODEL})")
    key = (spec, config.device(device))
    with _models_lock:
        if key not in _models:
            _models[key] = ClipModel(spec, device=device)
        return _models[key]


def text_query(conn, text: str, model=None):
    """The embedding of ``text`` by the collection's model, as a ``pgvector.HalfVector``."""
    from pgvector import HalfVector

    from . import textcache

    textcache.check_text(text)
    chosen, device = _settings.get(conn, (None, None))
    m = model_for(conn.execute(_BOUND).fetchone(), model or chosen, device)
    return HalfVector(textcache.embed(conn, m, text))


async def text_query_async(conn, text: str, model=None):
    """:func:`text_query` for an async psycopg connection."""
    from pgvector import HalfVector

    from . import textcache

    textcache.check_text(text)
    chosen, device = _settings.get(conn, (None, None))
    bound = await (await conn.execute(_BOUND)).fetchone()
    m = model_for(bound, model or chosen, device)
    return HalfVector(await textcache.embed_async(conn, m, text))


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
