"""psycopg 3 integration: pgvector types on a connection.

>>> import psycopg, clipsql.psycopg                     # doctest: +SKIP
>>> conn = psycopg.connect(url)                          # doctest: +SKIP
>>> clipsql.psycopg.register(conn)                       # doctest: +SKIP
"""

from __future__ import annotations


def register(conn) -> None:
    """Register pgvector's types (vector, halfvec, sparsevec) on a sync psycopg connection."""
    from pgvector.psycopg import register_vector

    register_vector(conn)


async def register_async(conn) -> None:
    """Register pgvector's types on an async psycopg connection."""
    from pgvector.psycopg import register_vector_async

    await register_vector_async(conn)
