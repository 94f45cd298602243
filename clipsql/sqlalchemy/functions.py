"""clipsql's SQL functions as typed SQLAlchemy functions, and its set-returning ones as
FROM items (:func:`similar_images`, :func:`relevant_images`, :func:`search_images`,
:func:`text_in_image`).

Importing this module (``clipsql.sqlalchemy`` does) registers them under the ``clipsql``
package of ``sqlalchemy.func``, the way geoalchemy2 registers PostGIS functions::

    >>> from sqlalchemy import func, select
    >>> import clipsql.sqlalchemy.functions
    >>> print(func.clipsql.text_embedding("two dogs").type)
    HALFVEC
    >>> sim = func.clipsql.similar_images(42, 5).table_valued()
    >>> [c.name for c in sim.c], sim.c.score.type
    (['id', 'path', 'score'], Float())
    >>> " ".join(str(select(sim.c.path)).split())
    'SELECT anon_1.path FROM clipsql.similar_images(:similar_images_1, :similar_images_2) AS anon_1'
    >>> [c.name for c in search_images("two dogs", 5).c]
    ['id', 'path', 'score']
    >>> " ".join(str(select(text_in_image("invoice", 5).c.id)).split())
    'SELECT anon_1.id FROM clipsql.text_in_image(:text_in_image_1, :text_in_image_2) AS anon_1'

"""

from __future__ import annotations

from pgvector.sqlalchemy import HALFVEC
from sqlalchemy import BigInteger, Float, Text, column, func
from sqlalchemy.sql.functions import GenericFunction
from sqlalchemy.types import NullType

from clipsql.query import relevance


class _ClipsqlFunction(GenericFunction):
    """A function of the ``clipsql`` schema: rendered as ``clipsql.<name>(...)``."""

    _register = False
    inherit_cache = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.packagenames = ("clipsql",)


class _RowsFunction(_ClipsqlFunction):
    """A set-returning function with typed ``(id, path, score)`` rows."""

    _register = False
    inherit_cache = True
    type = NullType()

    def table_valued(self, *expr, **kw):
        """The function as a FROM item; without arguments its columns are ``id, path, score``."""
        if not expr:
            expr = (column("id", BigInteger), column("path", Text), column("score", Float))
        return super().table_valued(*expr, **kw)


class text_embedding(_ClipsqlFunction):
    """``clipsql.text_embedding(query text) -> halfvec``: the stored embedding of a text query."""

    package = "clipsql"
    type = HALFVEC()
    inherit_cache = True


class image_embedding(_ClipsqlFunction):
    """``clipsql.image_embedding(id bigint | path text) -> halfvec``: an image's embedding."""

    package = "clipsql"
    type = HALFVEC()
    inherit_cache = True


class combine(_ClipsqlFunction):
    """``clipsql.combine(parts halfvec[], weights float8[]) -> halfvec``: weighted query algebra."""

    package = "clipsql"
    type = HALFVEC()
    inherit_cache = True


class _SimilarImages(_RowsFunction):
    """``clipsql.similar_images(image_id bigint, k int)``: ``(id, path, score)``, not itself."""

    name = "similar_images"
    package = "clipsql"
    inherit_cache = True


class _RelevantImages(_RowsFunction):
    """``clipsql.relevant_images(q halfvec, within, min_score, candidates)``: the relevant set
    (``id, path, score``), to order by your own columns."""

    name = "relevant_images"
    package = "clipsql"
    inherit_cache = True


class _TextInImage(_RowsFunction):
    """``clipsql.text_in_image(query text, k int)``: ``(id, path, score)`` of the images whose
    recognised words (``clipsql.ocr``) match the query, best first."""

    name = "text_in_image"
    package = "clipsql"
    inherit_cache = True


class _SearchImages(_RowsFunction):
    """``clipsql.search_images(query text, k int)``: ``(id, path, score)`` for an embedded text."""

    name = "search_images"
    package = "clipsql"
    inherit_cache = True


# --- the set-returning functions as FROM items -------------------------------------------

def similar_images(image_id: int, k: int = 10, name: str | None = None):
    """``clipsql.similar_images(image_id, k)`` as a FROM item with columns ``id, path, score``."""
    return func.clipsql.similar_images(image_id, k).table_valued(name=name)


def relevant_images(query, *, within: float | None = None, min_score: float | None = None,
                    candidates: int = relevance.CANDIDATES, name: str | None = None):
    """The relevant set of a query (``clip_text(...)``, ``clip_query(...)`` or a vector) as a
    FROM item with ``id, path, score``: join ``Image`` on ``id`` and order by any column."""
    from clipsql.sqlalchemy import query_vector

    return func.clipsql.relevant_images(query_vector(query), within, min_score,
                                        candidates).table_valued(name=name)


def search_images(text: str, k: int = 10, name: str | None = None):
    """``clipsql.search_images(text, k)`` (a text embedded before) as a FROM item."""
    return func.clipsql.search_images(text, k).table_valued(name=name)


def text_in_image(text: str, k: int = 10, name: str | None = None):
    """``clipsql.text_in_image(text, k)`` (words recognised in the images, ``clipsql ocr``)
    as a FROM item with ``id, path, score``."""
    return func.clipsql.text_in_image(text, k).table_valued(name=name)
