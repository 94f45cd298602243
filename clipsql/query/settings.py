"""Index-scan settings for searches, in one place: clipsql's own searches, the sessions of
psycopg/SQLAlchemy users (:data:`SESSION_SQL`) and the duplicate finder all read them here.
The SQL functions widen ``hnsw.ef_search`` through ``clipsql._widen_ef_search`` (migration
0005), the same rule as :func:`ef_search_for` with the session's setting as ``base``:
tests/integration/test_sql_parity.py runs both, and checks :data:`EF_SEARCH_MAX` against
pgvector's own cap."""

from __future__ import annotations

#: HNSW candidate list: unfiltered queries, and filtered ones (iterative scan).
EF_SEARCH = 200
EF_SEARCH_FILTERED = 200
#: pgvector's upper bound for hnsw.ef_search.
EF_SEARCH_MAX = 1000
#: pgvector 0.8 iterative scan: "strict_order", or "relaxed_order" (re-sorted here). With the
#: index built at ef_construction 128, strict_order gave the same recall in less time at 1M.
ITERATIVE_SCAN = "strict_order"
MAX_SCAN_TUPLES = 50_000
#: ef_search for the sessions of psycopg and SQLAlchemy users (their queries cannot re-sort).
SESSION_EF_SEARCH = 100

#: For a user's session (``clipsql.psycopg.register``, SQLAlchemy's ``configure``): with
#: pgvector 0.8+, an HNSW scan whose rows are filtered out (a WHERE, or a join on your own
#: tables) keeps scanning, in exact distance order, until LIMIT is filled; without it a
#: filtered ``ORDER BY embedding <=> q LIMIT k`` can return fewer than k rows.
SESSION_SQL = (
    f"SELECT set_config('hnsw.iterative_scan', '{ITERATIVE_SCAN}', false), "
    f"set_config('hnsw.ef_search', '{SESSION_EF_SEARCH}', false) FROM pg_extension "
    "WHERE extname = 'vector' AND string_to_array(extversion, '.')::int[] >= '{0,8}'")


def ef_search_for(limit: int, base: int = EF_SEARCH) -> int:
    """The candidate list for ``limit`` results: at least ``base``, at most pgvector's cap.

    >>> ef_search_for(10), ef_search_for(500), ef_search_for(5000)
    (200, 500, 1000)
    """
    return min(EF_SEARCH_MAX, max(base, limit))


def set_local_index_scan(conn, limit: int, *, filtered: bool, iterative: bool) -> None:
    """Settings of one index scan, for the current transaction only."""
    base = EF_SEARCH_FILTERED if filtered else EF_SEARCH
    conn.execute(f"SET LOCAL hnsw.ef_search = {ef_search_for(limit, base)}")
    if filtered and iterative:
        conn.execute(f"SET LOCAL hnsw.iterative_scan = {ITERATIVE_SCAN}")
        conn.execute(f"SET LOCAL hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
