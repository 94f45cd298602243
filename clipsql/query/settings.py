"""Index-scan settings for the sessions of psycopg/SQLAlchemy users (:data:`SESSION_SQL`).

clipsql's own rankings take their scan settings from SQL, their one home
(``clipsql.ef_search_for``, ``clipsql.rank_images`` and ``clipsql.near_duplicates``,
migrations/0020_one_home.sql): ef_search = least(1000, greatest(k, 200, the session's
hnsw.ef_search)), iterative scans under a filter, set for one scan and restored. What is left
here is the default of a user's own session, for queries clipsql does not write."""

from __future__ import annotations

#: pgvector 0.8 iterative scan for a user's session: "strict_order" (their queries cannot
#: re-sort). With the index built at ef_construction 128, strict_order gave the same recall
#: in less time at 1M.
ITERATIVE_SCAN = "strict_order"
#: ef_search for the sessions of psycopg and SQLAlchemy users; clipsql's own functions raise
#: it to their rule's floor for the scans they run.
SESSION_EF_SEARCH = 100

#: For a user's session (``clipsql.psycopg.register``, SQLAlchemy's ``configure``): with
#: pgvector 0.8+, an HNSW scan whose rows are filtered out (a WHERE, or a join on your own
#: tables) keeps scanning, in exact distance order, until LIMIT is filled; without it a
#: filtered ``ORDER BY embedding <=> q LIMIT k`` can return fewer than k rows.
SESSION_SQL = (
    f"SELECT set_config('hnsw.iterative_scan', '{ITERATIVE_SCAN}', false), "
    f"set_config('hnsw.ef_search', '{SESSION_EF_SEARCH}', false) FROM pg_extension "
    "WHERE extname = 'vector' AND string_to_array(extversion, '.')::int[] >= '{0,8}'")
