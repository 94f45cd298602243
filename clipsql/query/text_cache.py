"""Query-embedding cache: an in-process LRU in front of the ``clipsql.text_embeddings`` table.

A text query is embedded by the model once per process and once per database: the vector is
kept in memory (keyed by database, model and text) and stored in ``clipsql.text_embeddings``,
where the SQL function ``clipsql.text_embedding(query)`` finds it, so a search saved from
Python (or with ``clipsql embed-text``) also works from psql::

    SELECT path FROM clipsql.images
     ORDER BY embedding <=> clipsql.text_embedding('two dogs in snow') LIMIT 10;

Texts are stored only once a model is bound (the first load), because binding empties the
table. Vectors read back from the table are half precision, like the image embeddings. A
query (library, web, psycopg, SQLAlchemy alike) is embedded by the model's query engine,
int8 where its export passed the check, and the table caches exactly the vector it ranked
with; a text stored on purpose (:func:`save`: ``clipsql embed-text``,
``Collection.store_texts``) is embedded in fp32, like labels, and replaces what a query
cached.

>>> import clipsql
>>> db = clipsql.connect()                                               # doctest: +SKIP
>>> vec = embed(db.conn, db.model, "two dogs in snow")                   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from clipsql.database import binding
from clipsql.database.connection import database_key
from clipsql.database.queries import SQL
from clipsql.errors import DatabaseError, EmptyCollectionError, QueryError
from clipsql.query.algebra import check_text

if TYPE_CHECKING:
    import numpy as np

#: Texts kept in memory per process (a 512-d vector is 2 KB).
MAXSIZE = 4096

_lru: OrderedDict = OrderedDict()
_lock = threading.Lock()

_SELECT, _INSERT, _UPSERT = SQL["text_select"], SQL["text_insert"], SQL["text_upsert"]

#: ``bound_row`` not given: :func:`embed` reads the binding itself.
UNREAD = object()
__all__ = ["check_text", "database_key", "embed", "embed_async", "save", "stored", "clear",
           "MAXSIZE", "UNREAD"]


def _key(database: tuple, ident: dict, text) -> tuple:
    return (database, ident["arch"], ident["pretrained"], ident["dim"], text)


def _get(key):
    with _lock:
        vec = _lru.get(key)
        if vec is not None:
            _lru.move_to_end(key)
        return vec


def _put(key, vec) -> None:
    with _lock:
        _lru[key] = vec
        _lru.move_to_end(key)
        while len(_lru) > MAXSIZE:
            _lru.popitem(last=False)


def clear() -> None:
    """Forget every vector kept in memory (the table is left alone)."""
    with _lock:
        _lru.clear()


def _is_bound(bound_row, identity: dict) -> bool:
    """Whether the model of ``identity`` is the collection's bound model (raising if another
    one is)."""
    if bound_row is None:
        return False
    binding.check_identity(binding.bound_from_row(bound_row), identity)
    return True


def _savepoint_failed(exc) -> bool:
    """Errors that only mean "cannot cache here" (read-only transaction or role)."""
    import psycopg

    return isinstance(exc, (psycopg.errors.ReadOnlySqlTransaction,
                            psycopg.errors.InsufficientPrivilege))


def _vector(value) -> np.ndarray:
    import numpy as np

    return value.to_numpy().astype(np.float32)


def stored(conn, text: str) -> np.ndarray | None:
    """The vector kept for ``text`` in ``clipsql.text_embeddings`` (the bound model's), or None."""
    row = conn.execute(_SELECT, (text,)).fetchone()
    return None if row is None else _vector(row[0])


def embed(conn, model, text: str, *, store: bool = True, bound_row=UNREAD,
          checked: tuple[dict, tuple] | None = None) -> np.ndarray:
    """The embedding of ``text`` by ``model``: from memory, from the table, or computed and stored.

    ``conn`` is a sync psycopg connection with pgvector's types registered. Storing runs in a
    savepoint, so a read-only transaction of the caller is left intact (the vector is just
    not stored). ``store=False`` keeps a new vector in memory only (anonymous web queries).
    ``bound_row``: the caller's row of the binding (:data:`clipsql.database.binding.BINDING_SQL`,
    None: nothing bound), read once per call and passed down; by default it is read here.
    ``checked``: ``(identity, database)`` when the caller (the query service) has checked
    the text (:func:`check_text`) and ``model``'s identity against ``bound_row`` already, and
    knows the database (:func:`database_key`): nothing is checked twice.
    """
    from pgvector import HalfVector

    if checked is None:
        check_text(text)
        identity, database = model.identity(), database_key(conn)
    else:
        identity, database = checked
    key = _key(database, identity, text)
    vec = _get(key)
    if vec is not None:
        return vec
    if bound_row is UNREAD:
        bound_row = conn.execute(binding.BINDING_SQL).fetchone()
    if bound_row is None if checked is not None else not _is_bound(bound_row, identity):
        return model.encode_text([text])[0]
    vec = stored(conn, text)
    if vec is None:
        vec = model.encode_text([text])[0]
        if store:
            try:
                with conn.transaction():
                    conn.execute(_INSERT, (text, HalfVector(vec)))
            except Exception as exc:
                if not _savepoint_failed(exc):
                    raise
    _put(key, vec)
    return vec


async def embed_async(conn, model, text: str) -> np.ndarray:
    """:func:`embed` for an async psycopg connection; the model runs in a worker thread."""
    from pgvector import HalfVector

    check_text(text)
    identity = model.identity()
    key = _key(database_key(conn), identity, text)
    vec = _get(key)
    if vec is not None:
        return vec
    bound = await (await conn.execute(binding.BINDING_SQL)).fetchone()
    if not _is_bound(bound, identity):
        return (await asyncio.to_thread(model.encode_text, [text]))[0]
    row = await (await conn.execute(_SELECT, (text,))).fetchone()
    if row is not None:
        vec = _vector(row[0])
    else:
        vec = (await asyncio.to_thread(model.encode_text, [text]))[0]
        try:
            async with conn.transaction():
                await conn.execute(_INSERT, (text, HalfVector(vec)))
        except Exception as exc:
            if not _savepoint_failed(exc):
                raise
    _put(key, vec)
    return vec


def save(conn, model, texts) -> list[dict]:
    """Embed and store each text (for ``clipsql.text_embedding``); one dict per text.

    Needs a bound model: texts stored before the first load would be deleted by it.
    """
    texts = [check_text(t) for t in texts]
    if not texts:
        raise QueryError("give at least one text to embed")
    if not _is_bound(conn.execute(binding.BINDING_SQL).fetchone(), model.identity()):
        raise EmptyCollectionError(binding.EMPTY_MESSAGE + ", then embed queries")
    import psycopg
    from pgvector import HalfVector

    out = []
    vectors = model.encode_text(texts, fp32=True)  # stored on purpose: fp32
    for text, vec in zip(texts, vectors):
        known = stored(conn, text) is not None
        try:
            conn.execute(_UPSERT, (text, HalfVector(vec)))
        except psycopg.Error as exc:
            reason = exc.diag.message_primary or exc
            raise DatabaseError(f"cannot store the query embedding: {reason}") from None
        _put(_key(database_key(conn), model.identity(), text), vec)
        out.append({"query": text, "dim": int(vec.shape[0]), "new": not known})
    return out
