"""Alembic hooks that keep your migrations away from clipsql's own schema.

In ``env.py``::

    from clipsql.sqlalchemy import include_name, include_object

    context.configure(..., include_schemas=True, include_name=include_name,
                      include_object=include_object)
"""

from __future__ import annotations

from clipsql.database.images import SCHEMA


def include_name(name, type_, parent_names) -> bool:
    """Alembic ``include_name`` hook: skip the ``clipsql`` schema when ``include_schemas=True``.

    In ``env.py``: ``context.configure(..., include_schemas=True, include_name=include_name,
    include_object=include_object)``.
    """
    if type_ == "schema":
        return name != SCHEMA
    return (parent_names or {}).get("schema_name") != SCHEMA


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic ``include_object`` hook: never create, alter or drop anything in ``clipsql``."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return getattr(table, "schema", None) != SCHEMA
