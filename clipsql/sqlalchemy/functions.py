"""clipsql's SQL functions (migration 0002) as typed SQLAlchemy functions.

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

"""

from __future__ import annotations

from pgvector.sqlalchemy import HALFVEC
from sqlalchemy import BigInteger, Float, Text, column
from sqlalchemy.sql.functions import GenericFunction
from sqlalchemy.types import NullType


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


class similar_images(_RowsFunction):
    """``clipsql.similar_images(image_id bigint, k int)``: ``(id, path, score)``, not itself."""

    package = "clipsql"
    inherit_cache = True


class relevant_images(_RowsFunction):
    """``clipsql.relevant_images(q halfvec, within, min_score, candidates)``: the relevant set
    (``id, path, score``), to order by your own columns."""

    package = "clipsql"
    inherit_cache = True


class search_images(_RowsFunction):
    """``clipsql.search_images(query text, k int)``: ``(id, path, score)`` for an embedded text."""

    package = "clipsql"
    inherit_cache = True
