"""clipsql's set-returning SQL functions as FROM items with columns ``id, path, score``.

>>> from sqlalchemy import select
>>> sim = similar_images(42, 5)
>>> " ".join(str(select(sim.c.path)).split())
'SELECT anon_1.path FROM clipsql.similar_images(:similar_images_1, :similar_images_2) AS anon_1'
"""

from __future__ import annotations

from clipsql.sqlalchemy import functions  # noqa: F401  (registers func.clipsql.*)


def similar_images(image_id: int, k: int = 10, name: str | None = None):
    """``clipsql.similar_images(image_id, k)`` as a FROM item with columns ``id, path, score``."""
    from sqlalchemy import func

    return func.clipsql.similar_images(image_id, k).table_valued(name=name)


def relevant_images(query, *, within: float | None = None, min_score: float | None = None,
                    candidates: int = 200, name: str | None = None):
    """The relevant set of a query (``clip_text(...)``, ``clip_query(...)`` or a vector) as a
    FROM item with ``id, path, score``: join ``Image`` on ``id`` and order by any column."""
    from sqlalchemy import func

    from clipsql.sqlalchemy import query_vector

    return func.clipsql.relevant_images(query_vector(query), within, min_score,
                                        candidates).table_valued(name=name)


def search_images(text: str, k: int = 10, name: str | None = None):
    """``clipsql.search_images(text, k)`` (a text embedded before) as a FROM item."""
    from sqlalchemy import func

    return func.clipsql.search_images(text, k).table_valued(name=name)
